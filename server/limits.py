"""Request limits that protect the server from hostile or broken clients.

- BodyLimitMiddleware counts the bytes of every request body as they arrive, so an upload with
  no (or a lying) Content-Length is cut off at the limit with a 413 instead of spooling to disk,
  and gives the whole body a deadline, so a client that trickles its upload gets a 408 and
  frees its connection, spooled file and memory.
- collect_within drives a non-streamed decode one segment at a time and stops it at a deadline
  or when the client has gone away, so the worker thread is freed too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engines.types import Transcript, TranscriptionStream
from server.errors import APIError

MULTIPART_SLACK = 64 * 1024  # form framing and small fields around the file part


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        received = 0
        deadline = time.monotonic() + self.timeout_s
        done = False

        async def limited_receive() -> Message:
            nonlocal received, done
            if done:  # after the body, receive only waits for a disconnect: no deadline
                return await receive()
            remaining = deadline - time.monotonic()
            with anyio.move_on_after(max(0.0, remaining)) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                raise APIError(
                    408, f"The request body did not arrive within {self.timeout_s:g} seconds.",
                    code="request_timeout", headers={"Connection": "close"},
                )
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes + MULTIPART_SLACK:
                    raise APIError(
                        413, f"The request body is too large; the limit is {self.max_bytes / 2**20:g} MB.",
                        param="file", code="request_too_large", headers={"Connection": "close"},
                    )
                done = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)


class RequestTimeout(APIError):
    def __init__(self, seconds: float):
        super().__init__(
            504, f"The transcription did not finish within the server's limit of {seconds:g} seconds.",
            code="timeout", type="server_error",
        )


async def collect_within(
    start: Callable[[], TranscriptionStream],
    timeout_s: float,
    disconnected: Callable[[], Awaitable[bool]] | None = None,
) -> Transcript | None:
    """Decode to the end, one segment per worker-thread step; the stream is always closed.

    Returns None when the client went away (checked between segments). Past `timeout_s`
    the decode stops at the next segment boundary and RequestTimeout is raised.
    """
    deadline = time.monotonic() + timeout_s
    stream = await anyio.to_thread.run_sync(start)
    segments = []
    try:
        iterator = iter(stream)
        while True:
            segment = await anyio.to_thread.run_sync(next, iterator, None)
            if segment is None:
                break
            segments.append(segment)
            if time.monotonic() > deadline:
                raise RequestTimeout(timeout_s)
            if disconnected is not None and await disconnected():
                return None
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(stream.close)
    return stream.transcript(segments)
