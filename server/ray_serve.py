"""Oyez as a Ray Serve application, for scale-out over many GPUs or hosts (deploy/ray/serve.yaml).

Each replica is the whole server, `create_app(Settings())` built inside the replica's process: its own
registry, loaded models, scheduler and admission control (429 past OYEZ_MAX_QUEUE), so a replica behaves
like one `oyez serve`. Ray's proxy (port 8000) routes each HTTP request, SSE stream or WebSocket to a
replica, restarts a replica that dies, and adds or removes replicas on ongoing requests when autoscaling
is configured. Every response carries `X-Oyez-Replica`, the replica that answered.

    serve run deploy/ray/serve.yaml          # a local Ray, or `serve deploy` to a running cluster

Needs the `ray` extra (`pip install -e '.[ray]'`). Settings come from OYEZ_* variables, set per
application in serve.yaml's `runtime_env.env_vars`.
"""

from __future__ import annotations

import os
import socket

from fastapi import FastAPI
from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REPLICA_HEADER = b"x-oyez-replica"


class ReplicaHeader:
    """ASGI middleware: name the answering replica on every HTTP response."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app, self.value = app, replica.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self.value)]}
            await send(message)

        await self.app(scope, receive, send_with_header)


def replica_name() -> str:
    """Ray's id of the replica this runs in (host:pid outside a replica)."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not inside a Serve replica (a plain import, a test)
        return f"{socket.gethostname()}:{os.getpid()}"


def build_app() -> FastAPI:
    """Called by Ray inside each replica's process: the whole Oyez server, labelled with the replica."""
    from server.app import create_app
    from server.request_log import configure_logging
    from server.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    app.add_middleware(ReplicaHeader, replica=replica_name())
    return app


@serve.deployment(name="oyez")
@serve.ingress(build_app)
class Oyez:
    """One Oyez server per replica (serve.yaml sets replicas, CPUs/GPUs and max_ongoing_requests)."""


app = Oyez.bind()
