"""`oyez serve`: run the HTTP server."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="oyez", description="Self-hosted OpenAI-compatible speech-to-text server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the HTTP server (settings also come from OYEZ_* variables)")
    serve.add_argument("--host", help="address to bind (OYEZ_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (OYEZ_PORT, default 8000)")
    serve.add_argument("--log-level", help="debug, info, warning (OYEZ_LOG_LEVEL)")
    prepare = sub.add_parser("prepare", help="make every configured model's weights ready on disk (no server)")
    prepare.add_argument("--model", action="append", help="model name(s); default: the preload list")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        _prepare(args.model)
        return

    import uvicorn

    from server.app import create_app
    from server.request_log import configure_logging
    from server.settings import Settings

    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "log_level": args.log_level}.items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    # sse-starlette ends every open stream the moment SIGTERM arrives; ours are finite transcriptions,
    # so let them finish like any other request, within uvicorn's graceful-shutdown timeout below.
    from sse_starlette.sse import AppStatus

    AppStatus.disable_automatic_graceful_drain()
    # log_config=None: uvicorn's loggers propagate to ours (JSON when asked); its access log is
    # replaced by the request log. On SIGTERM uvicorn stops accepting connections, lets
    # in-flight requests finish for up to timeout_graceful_shutdown seconds, then exits.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
    )


def _prepare(names: list[str] | None) -> None:
    """Join bundled weights (or download configured ones, when allowed) ahead of time, e.g. in a Docker build."""
    from server.app import build_registry
    from server.settings import Settings

    settings = Settings()
    registry = build_registry(settings)
    for name in names or settings.preload:
        path = registry.resolve_weights(registry.spec(name).weights)
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
