"""Request limits that protect the server from hostile or broken clients.

- BodyLimitMiddleware counts the bytes of every request body as they arrive, so an upload with
  no (or a lying) Content-Length is cut off at the limit with a 413 instead of spooling to disk,
  and gives the whole body a deadline, so a client that trickles its upload gets a 408 and
  frees its connection, spooled file and memory.
- check_content_length and check_upload_size refuse what is too large (413) or empty (400) as early
  as the request allows.
"""

from __future__ import annotations

import time
from typing import BinaryIO

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def check_content_length(headers, limit: int) -> None:
    """Refuse an oversized upload from its Content-Length header, before reading the body."""
    raw = headers.get("content-length")
    if raw and raw.isdigit() and int(raw) > limit + MULTIPART_SLACK:
        raise too_large(limit)


def check_upload_size(file: BinaryIO, size: int | None, limit: int) -> None:
    """The uploaded file itself: not over the limit, not empty."""
    if size is None:
        position = file.tell()
        size = file.seek(0, 2)
        file.seek(position)
    if size > limit:
        raise too_large(limit)
    if size == 0:
        raise APIError(400, "The audio file is empty.", param="file", code="invalid_audio")


def too_large(limit: int) -> APIError:
    return APIError(
        413, f"The uploaded file is too large; the limit is {limit / (1024 * 1024):g} MB.",
        param="file", code="request_too_large",
    )
