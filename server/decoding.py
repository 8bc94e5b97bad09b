"""The one driver of an engine's stream, used by JSON responses, SSE streams and the WebSocket.

Engines decode in blocking calls (engines/types.py: a TranscriptionStream is an iterator of
segments). The driver pulls one segment per worker-thread step, so the event loop keeps serving,
and between two segments it enforces the request's deadline and stops when the caller says the
client has gone. However it ends (done, deadline, cancellation, error), the engine's stream is
closed, which stops faster-whisper before its next window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import anyio

from engines.types import Segment, Transcript, TranscriptionStream
from server.errors import APIError

log = logging.getLogger("oyez.decode")


class RequestTimeout(APIError):
    def __init__(self, seconds: float):
        super().__init__(
            504, f"The transcription did not finish within the server's limit of {seconds:g} seconds.",
            code="timeout", type="server_error",
        )


class Decoding:
    """One decode: `segments()` yields them as they come; `collect()` gathers the transcript."""

    def __init__(
        self,
        start: Callable[[], TranscriptionStream],
        timeout_s: float,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ):
        self._start = start
        self.timeout_s = timeout_s
        self._gone = gone
        self.stream: TranscriptionStream | None = None
        self.produced = 0
        self.finished = False
        self.abandoned = False  # stopped because the client went away

    async def segments(self) -> AsyncIterator[Segment]:
        deadline = time.monotonic() + self.timeout_s
        try:
            self.stream = await anyio.to_thread.run_sync(self._start)
            iterator = iter(self.stream)
            while True:
                segment = await anyio.to_thread.run_sync(next, iterator, None)
                if segment is None:
                    break
                self.produced += 1
                yield segment
                if time.monotonic() > deadline:
                    raise RequestTimeout(self.timeout_s)
                if self._gone is not None and await self._gone():
                    self.abandoned = True
                    return
            self.finished = True
        finally:
            if not self.finished:
                log.info("stream ended early after %d segments; decoding stopped", self.produced)
            if self.stream is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.stream.close)

    def transcript(self, segments: list[Segment]) -> Transcript:
        assert self.stream is not None, "the decode has not started"
        return self.stream.transcript(segments)

    async def collect(self) -> Transcript | None:
        """Decode to the end; None when the client went away before it was done."""
        segments: list[Segment] = []
        async with aclosing(self.segments()) as stream:
            async for segment in stream:
                segments.append(segment)
        if self.abandoned:
            return None
        return self.transcript(segments)
