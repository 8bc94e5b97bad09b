"""One structured log line per request, a request id in `X-Request-Id`, and request metrics.

The middleware gives every HTTP request a RequestInfo (in the ASGI scope); routes fill in
what they learn (model, format, audio seconds, queue wait, run time) and the middleware writes
the line and counts the request when the response has been sent, streams included. A client's
own `X-Request-Id` is kept when it is a short token, otherwise a fresh id is made. With
OYEZ_LOG_FORMAT=json every log line (the server's and uvicorn's) is a JSON object.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.metrics import Metrics

log = logging.getLogger("oyez.request")

SCOPE_KEY = "oyez.request"
HEADER = "x-request-id"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_PATHS = ("/health", "/ready", "/metrics")
CONTENT_LOGGERS = ("sse_starlette",)  # libraries whose debug lines carry request or response content  # probes and scrapes: logged at debug only
_ENDPOINTS = {
    "/v1/audio/transcriptions": "transcriptions",
    "/v1/audio/translations": "translations",
    "/health": "health",
    "/ready": "ready",
    "/metrics": "metrics",
}


@dataclass
class RequestInfo:
    id: str
    model: str = ""
    response_format: str = ""
    stream: bool = False
    audio_s: float | None = None
    queue_wait_s: float | None = None
    run_s: float | None = None
    redecoded: int | None = None  # stretches of speech the coverage guarantee decoded again
    redecoded_s: float | None = None


def request_info(request: Request) -> RequestInfo:
    """The request's RequestInfo (a detached one when the middleware is not installed)."""
    info = request.scope.get(SCOPE_KEY)
    return info if info is not None else RequestInfo(id=uuid.uuid4().hex)


def endpoint_of(path: str) -> str:
    if path in _ENDPOINTS:
        return _ENDPOINTS[path]
    return "models" if path.startswith("/v1/models") else "other"


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client_id = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-request-id"), "")
        info = RequestInfo(id=client_id if _CLIENT_ID.match(client_id) else uuid.uuid4().hex)
        scope[SCOPE_KEY] = info
        started = time.monotonic()
        status = 0
        error_body = b""
        is_json = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, error_body, is_json
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", info.id.encode()))
                is_json = any(k.lower() == b"content-type" and v.startswith(b"application/json") for k, v in headers)
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and status >= 400 and is_json and len(error_body) < 8192:
                error_body += message.get("body", b"")  # to read the error code for the log and metrics
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            status = status or 500
            raise
        finally:
            self.metrics.in_progress.dec()
            self._finish(scope, info, status, _error_code(error_body), time.monotonic() - started)

    def _finish(self, scope: Scope, info: RequestInfo, status: int, code: str | None, total_s: float) -> None:
        path = scope["path"]
        endpoint = endpoint_of(path)
        status = status or 499  # the client went away before any response started
        self.metrics.observe_response(endpoint, info.model or "none", info.response_format or "none", status, code)
        fields = {
            "request_id": info.id,
            "method": scope["method"],
            "path": path if endpoint != "other" else "(other)",
            "status": status,
            "model": info.model or None,
            "response_format": info.response_format or None,
            "stream": info.stream,
            "audio_s": _round(info.audio_s),
            "queue_wait_s": _round(info.queue_wait_s),
            "run_s": _round(info.run_s),
            "redecoded": info.redecoded,
            "redecoded_s": _round(info.redecoded_s),
            "total_s": _round(total_s),
            "error_code": code,
        }
        level = logging.DEBUG if path in _QUIET_PATHS and status < 400 else logging.INFO
        log.log(level, "request %s", _text(fields), extra={"fields": fields})


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _text(fields: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and v is not False)


def _error_code(body: bytes) -> str | None:
    if not body:
        return None
    try:
        error = json.loads(body).get("error") or {}
        code = error.get("code")
        return code if isinstance(code, str) and len(code) <= 64 else None
    except (ValueError, AttributeError):
        return None


class JsonFormatter(logging.Formatter):
    """Every record as one JSON object; a request line's fields are top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out["message"] = record.msg.split(" ", 1)[0] if isinstance(record.msg, str) else "request"
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Root logging for the server and uvicorn (started with log_config=None, so its loggers propagate)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"OYEZ_LOG_FORMAT must be `text` or `json`, not {fmt!r}.")
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Prompts and transcripts are never logged, at any level: sse-starlette logs every event it sends
    # (the transcript, piece by piece) at debug, so its logger never goes below info.
    for name in CONTENT_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
