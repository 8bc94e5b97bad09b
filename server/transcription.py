"""The transcription service: one upload, from the socket to the rendered response.

    read the form -> parse and check the request -> admit (429) -> decode the audio -> run -> render

Everything that can fail on the request's fault happens before any response starts, so it
answers a JSON 4xx even when a stream was asked for. Queued requests hold only their upload,
never a decoded signal: the audio is decoded once a run slot is held.
"""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace

import anyio
from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from engines.audio import Audio, decode_audio
from engines.types import Engine, TranscribeOptions
from server.catalogue import Catalogue, ModelHandle
from server.decoding import Decoding
from server.errors import error_body
from server.known_speakers import check_counts, decode_references
from server.limits import check_content_length, check_upload_size
from server.metrics import Metrics
from server.params import TranscriptionRequest, parse_transcription
from server.render import render
from server.request_log import RequestInfo, request_info
from server.scheduler import Scheduler, Ticket
from server.settings import Settings
from server.streaming import EventBuilder, HeldEventSourceResponse, stream_events
from server.validation import check_request, transcribe_options

log = logging.getLogger("oyez.server")

MAX_FORM_FILES = 4


@dataclass
class Job:
    """A checked request: what to run, on which model, with which engine options."""

    task: str
    req: TranscriptionRequest
    model: ModelHandle
    options: TranscribeOptions


@dataclass
class Run:
    """What an admitted request holds until its answer is complete: a run slot, the engine, the audio."""

    ticket: Ticket
    engine: Engine
    audio: Audio
    held: AsyncExitStack  # releases the engine lease and the slot, in that order


class TranscriptionService:
    """Serves /v1/audio/transcriptions and /v1/audio/translations."""

    def __init__(self, settings: Settings, catalogue: Catalogue, scheduler: Scheduler, metrics: Metrics):
        self.settings = settings
        self.limits = settings.limits
        self.catalogue = catalogue
        self.scheduler = scheduler
        self.metrics = metrics
        # Text parts hold at most a base64 speaker reference (4 characters per 3 bytes) or a prompt.
        self.max_text_part = max(1 << 20, int(self.limits.max_reference_bytes * 4 / 3) + 4096)

    async def handle(self, request: Request, task: str) -> Response:
        check_content_length(request.headers, self.limits.max_upload_bytes)
        info = request_info(request)
        form = await request.form(
            max_files=MAX_FORM_FILES, max_fields=self.limits.max_form_fields, max_part_size=self.max_text_part
        )
        try:
            job = await self.prepare(form, task, info)
            run = await self.admit(job, info)
        finally:
            await form.close()
        if job.req.stream:
            return self.stream(job, run, info)
        return await self.respond(request, job, run, info)

    async def prepare(self, form: FormData, task: str, info: RequestInfo) -> Job:
        """Parse and check the request against its model; decode known-speaker references."""
        req = parse_transcription(form, task)
        model = self.catalogue.resolve(req.model)
        info.model, info.response_format, info.stream = req.model, req.response_format, req.stream
        check_request(req, model.capabilities)
        check_counts(req.known_speaker_names, req.known_speaker_references,
                     self.limits.max_speaker_references, self.limits.max_reference_bytes)
        check_upload_size(req.file.file, req.file.size, self.limits.max_upload_bytes)
        options = transcribe_options(req, model.capabilities, self.settings.vad_by_default)
        if req.known_speaker_names:
            speakers = await anyio.to_thread.run_sync(
                decode_references, req.known_speaker_names, req.known_speaker_references
            )
            options = replace(options, known_speakers=speakers)
        return Job(task=task, req=req, model=model, options=options)

    async def admit(self, job: Job, info: RequestInfo) -> Run:
        """Queue for a run slot (429 when the queue is full), lease the engine, decode the audio."""
        model = job.model
        held = AsyncExitStack()
        self.metrics.queue_entered(model.id)
        entered = time.monotonic()
        try:
            ticket = await held.enter_async_context(self.scheduler.slot(model.pool, model.id))
        finally:
            self.metrics.queue_left(model.id, time.monotonic() - entered)
        info.queue_wait_s = ticket.queue_wait_s
        running = self.metrics.running.labels(model.id)
        running.inc()
        held.callback(running.dec)
        try:
            engine = await anyio.to_thread.run_sync(model.acquire)
            held.callback(model.release)
            engine.check(job.options)
            file = job.req.file.file
            audio = await anyio.to_thread.run_sync(
                lambda: decode_audio(file, max_seconds=self.limits.max_audio_seconds)
            )
        except BaseException:
            await held.aclose()
            raise
        info.audio_s = audio.duration
        return Run(ticket=ticket, engine=engine, audio=audio, held=held)

    def decoding(self, job: Job, run: Run, request: Request | None = None) -> Decoding:
        return Decoding(
            lambda: run.engine.transcribe(run.audio, job.options),
            self.limits.request_timeout_seconds,
            request.is_disconnected if request is not None else None,
        )

    async def respond(self, request: Request, job: Job, run: Run, info: RequestInfo) -> Response:
        decoding = self.decoding(job, run, request)
        async with run.held:
            transcript = await decoding.collect()
        self.finished(job, run, info, decoding)
        if transcript is None:  # the client went away; nobody reads the answer
            return Response(status_code=499)
        response = render(
            transcript,
            capabilities=job.model.capabilities,
            response_format=job.req.response_format,
            granularities=job.req.granularities,
            include_logprobs=job.req.include_logprobs,
        )
        response.headers.update(self.timing_headers(run, with_processing=True))
        return response

    def stream(self, job: Job, run: Run, info: RequestInfo) -> Response:
        builder = EventBuilder(job.req.include_logprobs, segment_events=job.req.response_format == "diarized_json")

        decoding = self.decoding(job, run)

        async def events():
            try:
                async for message in stream_events(decoding, builder, error_body):
                    yield message
            finally:
                await run.held.aclose()  # the slot is held until the last event
                self.finished(job, run, info, decoding)

        return HeldEventSourceResponse(
            events(), release=run.held.aclose, ping=self.settings.sse_keepalive_seconds, sep="\n",
            headers=self.timing_headers(run, with_processing=False),
        )

    def finished(self, job: Job, run: Run, info: RequestInfo, decoding: Decoding) -> None:
        ticket = run.ticket
        info.run_s = ticket.run_s
        self.metrics.observe_run(job.model.id, ticket.run_s, run.audio.duration)
        if decoding.stream is not None:  # what the coverage guarantee decoded again (engines/coverage.py)
            info.redecoded, info.redecoded_s = decoding.stream.redecoded, decoding.stream.redecoded_seconds
            self.metrics.observe_coverage(job.model.id, info.redecoded, info.redecoded_s)
        log.info(
            "%s model=%s format=%s stream=%s audio=%.2fs redecoded=%s queued=%.2fs ran=%.2fs",
            job.task, job.model.id, job.req.response_format, job.req.stream, run.audio.duration,
            info.redecoded, ticket.queue_wait_s, ticket.run_s,
        )

    @staticmethod
    def timing_headers(run: Run, with_processing: bool) -> dict[str, str]:
        headers = {"x-oyez-queue-ms": str(round(run.ticket.queue_wait_s * 1000))}
        if with_processing:
            headers["openai-processing-ms"] = str(round(run.ticket.run_s * 1000))
        return headers
