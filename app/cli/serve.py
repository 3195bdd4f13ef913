"""``scriptserve serve``: run the HTTP server."""

from __future__ import annotations

import argparse
import math

from app.config import Settings


def serve(args: argparse.Namespace) -> int:
    """Run the server with settings from the environment (flags override)."""
    import uvicorn

    from app.main import create_app
    from app.telemetry.logs import configure

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    configure(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        access_log=False,  # RequestContextMiddleware writes the access log, with request IDs
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the HTTP server (settings: SCRIPTSERVE_* env vars)")
    p.add_argument("--host", default=None, help="listen address (default: SCRIPTSERVE_HOST)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: SCRIPTSERVE_PORT)")
    p.set_defaults(func=serve)
