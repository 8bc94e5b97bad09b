"""Probes and scrapes: /health (the process answers), /ready (models loaded), /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/health")
async def health():
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request):
    state = request.app.state
    if not state.readiness.done.is_set():
        return JSONResponse({"status": "loading"}, status_code=503)
    if state.readiness.failed:
        return JSONResponse({"status": "unavailable", "failed": state.readiness.failed}, status_code=503)
    registry = state.registry
    return {"status": "ready", "loaded": [m for m in registry.ids() if registry.is_loaded(m)],
            "pools": state.scheduler.snapshot()}


@router.get("/metrics")
async def metrics(request: Request):
    return request.app.state.metrics.response()
