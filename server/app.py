"""The FastAPI application: OpenAI's /v1/audio and /v1/models routes, health checks."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from engines.audio import decode_audio
from engines.parallelism import Parallelism, plan
from engines.registry import EngineConfig, ModelRegistry, resolve_device
from engines.types import DiarizerConfig, TranscribeOptions, VadParams
from server.auth import APIKeyMiddleware, KeyChecker, announce, load_keys
from server.errors import APIError, error_body, install_error_handlers, invalid
from server.known_speakers import check_counts, decode_references
from server.limits import BodyLimitMiddleware, collect_within
from server.metrics import Metrics
from server.params import TranscriptionRequest, parse_transcription
from server.render import render
from server.request_log import RequestLogMiddleware, request_info
from server.scheduler import Scheduler
from server.settings import Settings
from server.streaming import HeldEventSourceResponse, stream_events

log = logging.getLogger("oyez.server")

MAX_FORM_FILES = 4


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    registry = build_registry(settings)
    ready = threading.Event()
    failed: list[str] = []
    keys = load_keys(settings.api_keys, settings.api_keys_file)
    checker = KeyChecker(keys)
    metrics = Metrics(registry)
    # Text parts hold at most a base64 speaker reference (4 characters per 3 bytes) or a prompt.
    max_text_part = max(1 << 20, int(settings.max_reference_mb * 2**20 * 4 / 3) + 4096)

    def preload() -> None:
        for name in settings.preload:
            try:
                registry.engine(name)
            except Exception:
                log.exception("could not preload model %s", name)
                failed.append(name)
        ready.set()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        threading.Thread(target=preload, name="oyez-preload", daemon=True).start()
        sweeper = asyncio.create_task(_sweep_models(registry, settings))
        yield
        sweeper.cancel()

    app = FastAPI(title="Oyez", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    install_error_handlers(app)
    # Outermost last: request id + log + metrics, then API keys, then body size/time limits.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, timeout_s=settings.body_timeout_seconds)
    app.add_middleware(APIKeyMiddleware, checker=checker)
    app.add_middleware(RequestLogMiddleware, metrics=metrics)
    announce(checker, len(keys))
    # Per loaded engine, `concurrency` requests decode at once (each in a worker thread, so
    # the event loop keeps answering) and up to `max_queue` wait; past that, 429.
    scheduler = Scheduler(parallelism(settings).concurrency, settings.max_queue)
    app.state.scheduler = scheduler

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready_check():
        if not ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        if failed:
            return JSONResponse({"status": "unavailable", "failed": failed}, status_code=503)
        return {"status": "ready", "loaded": [m for m in registry.ids() if registry.is_loaded(m)],
                "pools": scheduler.snapshot()}

    @app.get("/metrics")
    async def metrics_route():
        return metrics.response()

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_json(registry, m) for m in registry.ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        registry.spec(model_id)  # 404 in OpenAI's envelope when unknown
        return _model_json(registry, model_id)

    async def handle(request: Request, task: str) -> Response:
        _check_length(request, settings.max_upload_bytes)
        info = request_info(request)
        form = await request.form(max_files=MAX_FORM_FILES, max_fields=settings.max_form_fields, max_part_size=max_text_part)
        try:
            # Everything that can fail on the request's fault happens here, before any
            # response starts, so it answers a JSON 4xx even when a stream was asked for.
            req = parse_transcription(form, task)
            spec = registry.spec(req.model)
            info.model, info.response_format, info.stream = req.model, req.response_format, req.stream
            _check_request(req, spec.kind)
            check_counts(
                req.known_speaker_names, req.known_speaker_references,
                settings.max_speaker_references, int(settings.max_reference_mb * 2**20),
            )
            size = req.file.size if req.file.size is not None else _file_size(req.file.file)
            if size > settings.max_upload_bytes:
                raise _too_large(settings.max_upload_bytes)
            if size == 0:
                raise APIError(400, "The audio file is empty.", param="file", code="invalid_audio")
            options = _options(req, settings)
            if req.known_speaker_names:
                speakers = await anyio.to_thread.run_sync(
                    decode_references, req.known_speaker_names, req.known_speaker_references
                )
                options = replace(options, known_speakers=speakers)
            # Admission (429 when the queue is full), then the run slot, the engine lease and the
            # decoded audio: queued requests hold only their upload, never a decoded signal.
            held = AsyncExitStack()
            metrics.queue_entered(req.model)
            entered = time.monotonic()
            try:
                ticket = await held.enter_async_context(scheduler.slot(registry.pool(req.model), req.model))
            finally:
                metrics.queue_left(req.model, time.monotonic() - entered)
            info.queue_wait_s = ticket.queue_wait_s
            metrics.running.labels(req.model).inc()
            held.callback(metrics.running.labels(req.model).dec)
            request.state.ticket = ticket
            try:
                engine = await anyio.to_thread.run_sync(registry.acquire, req.model)
                held.callback(registry.release, req.model)
                engine.check(options)
                audio = await anyio.to_thread.run_sync(
                    lambda: decode_audio(req.file.file, max_seconds=settings.max_audio_seconds)
                )
            except BaseException:
                await held.aclose()
                raise
        finally:
            await form.close()
        headers = {"x-oyez-queue-ms": str(round(ticket.queue_wait_s * 1000))}
        info.audio_s = audio.duration

        def finished() -> None:
            info.run_s = ticket.run_s
            metrics.observe_run(req.model, ticket.run_s, audio.duration)
            _log_done(task, req, audio.duration, ticket)

        if req.stream:
            async def events():
                try:
                    async for message in stream_events(
                        lambda: engine.transcribe(audio, options), req.include_logprobs, error_body
                    ):
                        yield message
                finally:
                    await held.aclose()  # the slot is held until the last event
                    finished()

            return HeldEventSourceResponse(
                events(), release=held.aclose, ping=settings.sse_keepalive_seconds, sep="\n", headers=headers,
            )

        async with held:
            transcript = await collect_within(
                lambda: engine.transcribe(audio, options), settings.request_timeout_seconds, request.is_disconnected
            )
        finished()
        if transcript is None:  # the client went away; nobody reads the answer
            return Response(status_code=499)
        response = render(
            transcript,
            model=req.model,
            response_format=req.response_format,
            granularities=req.granularities,
            include_logprobs=req.include_logprobs,
            diarized=spec.kind == "diarize",
        )
        response.headers.update({**headers, "openai-processing-ms": str(round(ticket.run_s * 1000))})
        return response

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        return await handle(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request):
        return await handle(request, "translate")

    return app


def _log_done(task: str, req: TranscriptionRequest, duration: float, ticket) -> None:
    log.info(
        "%s model=%s format=%s stream=%s audio=%.2fs queued=%.2fs ran=%.2fs",
        task, req.model, req.response_format, req.stream, duration, ticket.queue_wait_s, ticket.run_s,
    )


async def _sweep_models(registry: ModelRegistry, settings: Settings) -> None:
    """Unload idle models and enforce the resident cap, off the event loop, every few seconds."""
    if settings.model_idle_seconds <= 0 and settings.max_loaded_models <= 0:
        return
    interval = min(30.0, max(0.5, settings.model_idle_seconds / 4)) if settings.model_idle_seconds > 0 else 5.0
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(registry.maintain)
        except Exception:
            log.exception("model sweep failed")


def parallelism(settings: Settings) -> Parallelism:
    """Replicas, threads and concurrent requests per model, with settings left at 0 filled in for the device."""
    return plan(resolve_device(settings.device), settings.num_workers, settings.cpu_threads, settings.max_concurrency)


def build_registry(settings: Settings) -> ModelRegistry:
    parallel = parallelism(settings)
    log.info("per model: %d requests at once, %d replicas x %s threads, queue of %d",
             parallel.concurrency, parallel.replicas, parallel.threads or "default", settings.max_queue)
    return ModelRegistry(
        default_weights=settings.default_weights,
        models=settings.models,
        cache_dir=settings.cache_dir,
        allow_downloads=settings.allow_downloads,
        engine=EngineConfig(
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=parallel.threads,
            num_workers=parallel.replicas,
            beam_size=settings.beam_size,
            batch_size=settings.batch_size,
            window_seconds=settings.window_seconds,
        ),
        idle_seconds=settings.model_idle_seconds,
        max_loaded=settings.max_loaded_models,
        diarizer=DiarizerConfig(
            pipeline=settings.diarization_pipeline,
            hf_token=settings.hf_token,
            allow_downloads=settings.allow_downloads,
            cache_dir=settings.cache_dir,
            device=settings.device,
            threads=settings.diarization_threads,
            clustering=settings.diarization_clustering,
            clustering_threshold=settings.diarization_threshold,
            min_cluster_size=settings.diarization_min_cluster_size,
            segmentation_step=settings.diarization_step,
            voice_split_threshold=settings.diarization_voice_split or None,
            edge_extension_s=settings.diarization_edge_extension_seconds,
            match_threshold=settings.speaker_match_threshold,
        ),
    )


def _options(req: TranscriptionRequest, settings: Settings) -> TranscribeOptions:
    if req.chunking.kind == "default":
        vad = VadParams() if settings.vad_by_default else None
    else:
        vad = req.chunking.vad
    return TranscribeOptions(
        task=req.task,
        language=req.language,
        prompt=req.prompt,
        temperature=req.temperature,
        word_timestamps=req.response_format == "verbose_json" and "word" in req.granularities,
        token_logprobs=req.include_logprobs,
        vad=vad,
        num_speakers=req.speakers.num, min_speakers=req.speakers.min, max_speakers=req.speakers.max,
    )


DIARIZE_FORMATS = ("json", "text", "diarized_json", "srt", "vtt")


def _check_request(req: TranscriptionRequest, kind: str) -> None:
    """Refuse field combinations OpenAI refuses for this kind of model."""
    if kind != "diarize":
        if req.response_format == "diarized_json":
            raise invalid("response_format", "`diarized_json` is only available with the model `gpt-4o-transcribe-diarize`.")
        if req.known_speaker_names or req.known_speaker_references:
            field = "known_speaker_names" if req.known_speaker_names else "known_speaker_references"
            raise invalid(field, f"`{field}` is only supported with the model `gpt-4o-transcribe-diarize`.")
        if req.speakers:
            raise invalid("num_speakers", "`num_speakers`, `min_speakers` and `max_speakers` are only supported with the model `gpt-4o-transcribe-diarize`.")
        return
    if req.task != "transcribe":
        raise invalid("model", f"The model `{req.model}` cannot be used for translations.")
    if req.response_format not in DIARIZE_FORMATS:
        raise invalid(
            "response_format",
            f"`{req.response_format}` is not available with `{req.model}`; use one of {', '.join(DIARIZE_FORMATS)}.",
        )
    if req.prompt is not None:
        raise invalid("prompt", f"`prompt` is not supported with the model `{req.model}`.")
    if req.include_logprobs:
        raise invalid("include", f"`include[]=logprobs` is not supported with the model `{req.model}`.")


def _check_length(request: Request, limit: int) -> None:
    """Refuse an oversized upload from its Content-Length header, before reading the body."""
    raw = request.headers.get("content-length")
    if raw and raw.isdigit() and int(raw) > limit + 64 * 1024:  # allow for the multipart framing
        raise _too_large(limit)


def _too_large(limit: int) -> APIError:
    return APIError(
        413, f"The uploaded file is too large; the limit is {limit / (1024 * 1024):g} MB.",
        param="file", code="request_too_large",
    )


def _file_size(fh) -> int:
    pos = fh.tell()
    fh.seek(0, 2)
    size = fh.tell()
    fh.seek(pos)
    return size


def _model_json(registry: ModelRegistry, model_id: str) -> dict:
    spec = registry.spec(model_id)
    return {
        "id": spec.id,
        "object": "model",
        "created": spec.created,
        "owned_by": "oyez",
        "loaded": registry.is_loaded(model_id),
    }
