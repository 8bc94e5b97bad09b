"""OpenAI's transcription stream: `transcript.text.delta` events as segments decode, then `transcript.text.done`.

The joined deltas always equal `done.text`, in every mode. With the diarize model and
`response_format=diarized_json`, each speaker segment also gets a `transcript.text.segment`
event (the item of diarized_json's `segments`), and its delta carries that `segment_id`.
"""

from __future__ import annotations

import json
import logging
from contextlib import aclosing
from typing import AsyncIterator, Awaitable, Callable

import anyio
from sse_starlette import EventSourceResponse

from engines.types import Segment, TextJoiner, Transcript
from server.decoding import Decoding
from server.render import diarized_segment_json, logprobs_json, token_usage

log = logging.getLogger("oyez.stream")


class EventBuilder:
    """Builds the event payloads for one stream from the segments it is fed."""

    def __init__(self, include_logprobs: bool, segment_events: bool = False):
        self.include_logprobs = include_logprobs
        self.segment_events = segment_events  # diarized_json asked: speaker segments as their own events
        self.joiner = TextJoiner()
        self.segments: list[Segment] = []
        self.speaker_segments = 0  # numbered as in diarized_json

    def on_segment(self, segment: Segment) -> list[dict]:
        self.segments.append(segment)
        piece = self.joiner.add(segment)
        events: list[dict] = []
        delta: dict = {"type": "transcript.text.delta", "delta": piece}
        if self.include_logprobs:
            delta["logprobs"] = logprobs_json(segment.logprobs)
        if self.segment_events and segment.speaker is not None and segment.text.strip():
            event = diarized_segment_json(segment, self.speaker_segments)
            self.speaker_segments += 1
            delta["segment_id"] = event["id"]
            events.append(event)
        if piece or not events:
            events.insert(0, delta)
        return events

    def done(self, transcript: Transcript) -> dict:
        event: dict = {"type": "transcript.text.done", "text": self.joiner.text}
        if self.include_logprobs:
            event["logprobs"] = logprobs_json(transcript.logprobs)
        # OpenAI's done event defines token usage only, whatever the model is billed by.
        event["usage"] = token_usage(transcript)
        return event


def sse_data(payload: dict) -> dict:
    return {"data": json.dumps(payload, ensure_ascii=False, separators=(",", ":"))}


async def stream_events(
    decoding: Decoding, builder: EventBuilder, error_body: Callable[[Exception], dict]
) -> AsyncIterator[dict]:
    """SSE messages for one decode. When the client goes away the task is cancelled at the step in
    flight and the driver closes the engine's stream; a failure once the stream has started is
    reported in-band as an `error` event."""
    try:
        async with aclosing(decoding.segments()) as segments:
            async for segment in segments:
                for event in builder.on_segment(segment):
                    yield sse_data(event)
        yield sse_data(builder.done(decoding.transcript(builder.segments)))
    except Exception as exc:  # the stream has started: report in-band, then end it
        log.exception("stream failed after %d segments", decoding.produced)
        yield sse_data({"type": "error", **error_body(exc)})


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
