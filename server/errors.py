"""OpenAI's error envelope for every failure: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from engines.errors import (
    AudioDecodeError,
    AudioTooLongError,
    EngineError,
    ModelNotFoundError,
    ModelUnavailableError,
    UnsupportedOptionError,
)

log = logging.getLogger("oyez.server")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid(param: str, message: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def from_engine_error(exc: EngineError) -> APIError:
    if isinstance(exc, ModelNotFoundError):
        return APIError(404, exc.message, param=exc.param, code="model_not_found")
    if isinstance(exc, ModelUnavailableError):
        return APIError(400, exc.message, param=exc.param, code="model_not_available")
    if isinstance(exc, AudioTooLongError):
        return APIError(400, exc.message, param=exc.param, code="audio_too_long")
    if isinstance(exc, AudioDecodeError):
        return APIError(400, exc.message, param=exc.param, code="invalid_audio")
    if isinstance(exc, UnsupportedOptionError):
        return APIError(400, exc.message, param=exc.param, code="unsupported_value")
    return APIError(400, exc.message, param=exc.param)


def error_body(exc: Exception) -> dict:
    """The envelope for an exception raised while a stream is already under way."""
    if isinstance(exc, APIError):
        return exc.body()
    if isinstance(exc, EngineError):
        return from_engine_error(exc).body()
    return APIError(500, "The server had an error while processing your request.", type="server_error").body()


_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 401: "invalid_api_key"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError):
        return from_engine_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return APIError(exc.status_code, message, code=_STATUS_CODES.get(exc.status_code), type=kind).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        return APIError(400, first.get("msg", "Invalid request."), param=".".join(loc) or None).response()

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(_: Request, exc: ClientDisconnect):
        log.info("client disconnected before its request body was complete")
        return Response(status_code=499)  # nobody is listening; no traceback for an everyday event

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        log.exception("unhandled error")
        return APIError(500, "The server had an error while processing your request.", type="server_error").response()
