"""GET /v1/models and /v1/models/{id}: the catalogue, with which models are loaded."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request):
    return request.app.state.catalogue.list()


@router.get("/v1/models/{model_id:path}")
async def get_model(request: Request, model_id: str):
    return request.app.state.catalogue.describe(model_id)  # 404 in OpenAI's envelope when unknown
