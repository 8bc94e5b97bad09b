"""The browser playground: `/` and `/playground` serve a page that uses the public /v1 API like any client.

Every asset comes from the package (`server/playground/`), so the page works with no network;
a Content-Security-Policy keeps the browser from loading or calling anything but this server.
The page itself needs no API key (server/auth.py protects /v1/* only); it asks for one when /v1 answers 401.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from server.errors import APIError

router = APIRouter()

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "pcm-worklet.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob: data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
        "base-uri 'self'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> Response:
    if name not in ASSETS:
        raise APIError(404, f"No playground file named {name!r}.", code="not_found")
    body = resources.files("server.playground").joinpath(name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers=HEADERS)


@router.get("/", include_in_schema=False)
@router.get("/playground", include_in_schema=False)
async def page() -> Response:
    return _asset("index.html")


@router.get("/playground/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    return _asset(name)
