"""The FastAPI application, assembled: settings -> services on `app.state` -> middleware -> routers."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from engines.devices import resolve_device
from engines.parallelism import Parallelism, plan
from engines.registry import ModelRegistry
from server.auth import APIKeyMiddleware, KeyChecker, announce, load_keys
from server.catalogue import Catalogue, model_specs
from server.errors import install_error_handlers
from server.lifecycle import Readiness, sweep_models
from server.limits import BodyLimitMiddleware
from server.metrics import Metrics
from server.request_log import RequestLogMiddleware
from server.realtime.session import RealtimeService
from server.routers import audio, health, models, playground, realtime
from server.scheduler import Scheduler
from server.settings import Settings
from server.transcription import TranscriptionService

log = logging.getLogger("oyez.server")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    registry = build_registry(settings)
    readiness = Readiness(registry, settings.preload)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        readiness.start()
        sweeper = asyncio.create_task(sweep_models(registry, settings.scheduler))
        yield
        sweeper.cancel()

    app = FastAPI(title="Oyez", version="0.1.0", lifespan=lifespan)
    state = app.state
    state.settings = settings
    state.registry = registry
    state.readiness = readiness
    state.catalogue = Catalogue(registry)
    state.metrics = Metrics(registry)
    # Per loaded engine, `concurrency` requests decode at once (each in a worker thread, so
    # the event loop keeps answering) and up to `max_queue` wait; past that, 429.
    state.scheduler = Scheduler(parallelism(settings).concurrency, settings.scheduler.max_queue)
    state.transcription = TranscriptionService(settings, state.catalogue, state.scheduler, state.metrics)
    state.realtime = RealtimeService(state)

    install_error_handlers(app)
    keys = load_keys(settings.api_keys, settings.api_keys_file)
    checker = KeyChecker(keys)
    announce(checker, len(keys))
    # Outermost last: request id + log + metrics, then API keys, then body size/time limits.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_upload_bytes,
                       timeout_s=settings.limits.body_timeout_seconds)
    app.add_middleware(APIKeyMiddleware, checker=checker)
    app.add_middleware(RequestLogMiddleware, metrics=state.metrics)

    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(audio.router)
    app.include_router(realtime.router)
    app.include_router(playground.router)
    return app


def parallelism(settings: Settings) -> Parallelism:
    """Replicas, threads and concurrent requests per model, with settings left at 0 filled in for the device."""
    w = settings.whisper
    return plan(resolve_device(w.device), w.num_workers, w.cpu_threads, settings.scheduler.max_concurrency,
                max_batch=w.max_batch, solo_replica=w.solo_replica)


def build_registry(settings: Settings) -> ModelRegistry:
    parallel = parallelism(settings)
    log.info("per model: %d requests at once, %d replicas x %s threads%s, batches of up to %d calls, queue of %d",
             parallel.concurrency, parallel.replicas, parallel.threads or "default",
             f" (+1 x {parallel.solo_threads} for a lone request)" if parallel.solo_threads else "",
             parallel.max_batch, settings.scheduler.max_queue)
    return ModelRegistry(
        model_specs(settings.whisper.default_weights, settings.models),
        whisper=settings.whisper,
        diarization=settings.diarization,
        idle_seconds=settings.scheduler.model_idle_seconds,
        max_loaded=settings.scheduler.max_loaded_models,
    )
