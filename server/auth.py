"""API keys: every /v1/* request needs `Authorization: Bearer <key>` once keys are configured.

WebSocket upgrades under /v1/ (the realtime endpoint) are checked the same way, and also accept the
key as a `Sec-WebSocket-Protocol` value `openai-insecure-api-key.<key>`, which is how browsers send it.

Keys come from OYEZ_API_KEYS (comma-separated or a JSON list) and OYEZ_API_KEYS_FILE (one a line).
A presented key is compared with every configured key through SHA-256 digests and
hmac.compare_digest, with no early exit, so timing tells nothing about how much of a key
matched, nor which key, nor its length. Keys are never logged; only how many are configured.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import APIError

log = logging.getLogger("oyez.auth")

PROTECTED_PREFIX = "/v1/"


def load_keys(keys: str = "", keys_file: Path | None = None) -> list[str]:
    """Configured keys from the setting's text and the optional file; blank entries are ignored."""
    found: list[str] = []
    text = keys.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("OYEZ_API_KEYS looks like a JSON list but does not parse.") from None
        if not isinstance(parsed, list) or not all(isinstance(k, str) for k in parsed):
            raise ValueError("OYEZ_API_KEYS must be a JSON list of strings or a comma-separated list.")
        found.extend(parsed)
    else:
        found.extend(text.replace("\n", ",").split(","))
    if keys_file is not None:
        for line in Path(keys_file).expanduser().read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0]
            found.append(line)
    keys_out = []
    for key in (k.strip() for k in found):
        if not key:
            continue
        if any(c.isspace() for c in key) or not key.isprintable():
            raise ValueError("API keys may not contain whitespace or control characters.")
        keys_out.append(key)
    return keys_out


class KeyChecker:
    def __init__(self, keys: list[str]):
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def accepts(self, presented: str | None) -> bool:
        if presented is None:
            return False
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        ok = False
        for expected in self._digests:  # no early exit: every key is compared every time
            ok |= hmac.compare_digest(digest, expected)
        return ok


SUBPROTOCOL_KEY_PREFIX = "openai-insecure-api-key."


def subprotocol_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """A browser's key: WebSocket clients cannot set Authorization, so OpenAI's browser SDK offers
    `openai-insecure-api-key.<key>` among the Sec-WebSocket-Protocol values."""
    for name, value in headers:
        if name.lower() == b"sec-websocket-protocol":
            for proto in value.decode("latin-1").split(","):
                proto = proto.strip()
                if proto.startswith(SUBPROTOCOL_KEY_PREFIX) and len(proto) > len(SUBPROTOCOL_KEY_PREFIX):
                    return proto[len(SUBPROTOCOL_KEY_PREFIX):]
    return None


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class APIKeyMiddleware:
    """Answers 401 `invalid_api_key` in OpenAI's envelope before the route (and the upload) is read."""

    def __init__(self, app: ASGIApp, checker: KeyChecker):
        self.app, self.checker = app, checker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not self.checker.enabled or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        if token is None and kind == "websocket":
            token = subprotocol_key(scope["headers"])
        if self.checker.accepts(token):
            await self.app(scope, receive, send)
            return
        message = (
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            if token is None else "Incorrect API key provided."  # never echo the key back
        )
        response = APIError(401, message, code="invalid_api_key").response()
        if kind == "http":
            await response(scope, receive, send)
            return
        # A WebSocket upgrade is refused before it is accepted: with the server's denial-response
        # extension the client sees the same 401 JSON body; without it, a plain 403.
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await response(scope, receive, send)  # Starlette sends it as websocket.http.response.*
        else:
            await send({"type": "websocket.close", "code": 1008})


def announce(checker: KeyChecker, count: int) -> None:
    if checker.enabled:
        log.info("API keys: %d configured; /v1/* requires Authorization: Bearer <key>", count)
    else:
        log.warning(
            "!!! NO API KEYS CONFIGURED: anyone who can reach this server can use it. "
            "Set OYEZ_API_KEYS or OYEZ_API_KEYS_FILE before exposing it beyond localhost. !!!"
        )
