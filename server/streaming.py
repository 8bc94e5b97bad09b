"""OpenAI's transcription stream: `transcript.text.delta` events as segments decode, then `transcript.text.done`.

Diarized segments (those with a speaker) also get a `transcript.text.segment`
event, and their deltas carry its `segment_id`.
"""

from __future__ import annotations

import json
import logging
from typing import AsyncIterator, Awaitable, Callable

import anyio
from sse_starlette import EventSourceResponse

from engines.types import Segment, TextJoiner, TranscriptionStream
from server.render import logprobs_json, segment_id, speaker_text, token_usage

log = logging.getLogger("oyez.stream")


class EventBuilder:
    """Builds the event payloads for one stream from the segments it is fed."""

    def __init__(self, include_logprobs: bool):
        self.include_logprobs = include_logprobs
        self.joiner = TextJoiner()
        self.segments: list[Segment] = []
        self.diarized: list[Segment] = []  # segments with a speaker and text, numbered as in diarized_json

    def on_segment(self, segment: Segment) -> list[dict]:
        self.segments.append(segment)
        piece = self.joiner.add(segment)
        events: list[dict] = []
        delta: dict = {"type": "transcript.text.delta", "delta": piece}
        if self.include_logprobs:
            delta["logprobs"] = logprobs_json(segment.logprobs)
        if segment.speaker is not None and segment.text.strip():
            self.diarized.append(segment)
            seg_id = segment_id(len(self.diarized) - 1)
            delta["segment_id"] = seg_id
            events.append({
                "type": "transcript.text.segment", "id": seg_id, "start": round(segment.start, 3),
                "end": round(segment.end, 3), "text": segment.text.strip(), "speaker": segment.speaker,
            })
        if piece or not events:
            events.insert(0, delta)
        return events

    def done(self, stream: TranscriptionStream) -> dict:
        transcript = stream.transcript(self.segments)
        # A diarized stream's final text is the `Speaker: text` lines of the non-streamed response.
        text = speaker_text(self.diarized) if self.diarized else self.joiner.text
        event: dict = {"type": "transcript.text.done", "text": text}
        if self.include_logprobs:
            event["logprobs"] = logprobs_json(transcript.logprobs)
        event["usage"] = token_usage(transcript)
        return event


def sse_data(payload: dict) -> dict:
    return {"data": json.dumps(payload, ensure_ascii=False, separators=(",", ":"))}


async def stream_events(
    start: Callable[[], TranscriptionStream],
    include_logprobs: bool,
    error_body: Callable[[Exception], dict],
) -> AsyncIterator[dict]:
    """Drive decoding in a worker thread one segment at a time and yield SSE messages.

    Each step runs one `next()` in a thread, so the event loop stays free. When the
    client goes away, the task is cancelled at the step in flight; the decoder is
    then closed, which stops faster-whisper before the next window.
    """
    stream: TranscriptionStream | None = None
    builder = EventBuilder(include_logprobs)
    produced = 0
    finished = False
    try:
        stream = await anyio.to_thread.run_sync(start)
        segments = iter(stream)
        while True:
            segment = await anyio.to_thread.run_sync(_next, segments)
            if segment is None:
                break
            produced += 1
            for event in builder.on_segment(segment):
                yield sse_data(event)
        finished = True
        yield sse_data(builder.done(stream))
    except Exception as exc:  # the stream has started: report in-band, then end it
        log.exception("stream failed after %d segments", produced)
        yield sse_data({"type": "error", **error_body(exc)})
    finally:
        if not finished:
            log.info("stream ended early after %d segments; decoding stopped", produced)
        if stream is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(stream.close)



def _next(iterator):
    return next(iterator, None)


class HeldEventSourceResponse(EventSourceResponse):
    """An SSE response that runs `release` when it ends, however it ends.

    The event generator releases its slot in its own `finally`, but a generator that never
    started (the client left before the first event) never runs it; this does.
    """

    def __init__(self, content, *, release: Callable[[], Awaitable[object]], **kwargs):
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()
