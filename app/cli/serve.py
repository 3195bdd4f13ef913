"""``scriptserve serve``: run the HTTP server (one process, or supervised workers)."""

from __future__ import annotations

import argparse
import math
import socket
from typing import Any

from app.config import Settings


def serve(args: argparse.Namespace) -> int:
    """Run the server with settings from the environment (flags override)."""
    flags = {"host": args.host, "port": args.port, "workers": args.workers,
             "model_dir": args.model_dir, "model_name": args.model_name}
    overrides: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    settings = Settings(**overrides)

    from app.telemetry.logs import configure

    configure(settings.log_level, settings.log_format)
    count = settings.worker_count()
    if settings.worker_dir is None and count > 1:
        from app.cli.workers import supervise

        overrides.pop("workers", None)
        if settings.model_dir is not None:  # the workers share one private store
            from app.intake import model_dir

            settings = model_dir.with_scratch_store(settings)
            overrides.update(model_store=settings.model_store, install_example=False)
            try:
                return supervise(settings, count, overrides)
            finally:
                model_dir.remove_scratch_store(settings)
        return supervise(settings, count, overrides)
    return _run(settings)


def _run(settings: Settings) -> int:
    """One server process: alone, or worker ``worker_index`` of a supervised group."""
    import uvicorn

    from app.main import create_app

    sockets: list[socket.socket] | None = None
    if settings.worker_dir is not None:
        settings = _worker_device(settings)
        sockets = _worker_sockets(settings)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        access_log=False,  # RequestContextMiddleware writes the access log, with request IDs
        # the last second of the grace is the lifespan's: kill stuck model hosts, drain, exit
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_s) - 1),
    )
    uvicorn.Server(config).run(sockets=sockets)
    return 0


def _worker_sockets(settings: Settings) -> list[socket.socket]:
    """The port the supervisor bound, and this worker's own socket for its siblings."""
    from app.telemetry.federation import worker_socket_path

    assert settings.worker_dir is not None and settings.worker_fd is not None
    shared = socket.socket(fileno=settings.worker_fd)
    path = worker_socket_path(settings.worker_dir, settings.worker_index)
    path.unlink(missing_ok=True)  # left by this worker's previous life
    own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    own.bind(str(path))
    own.listen(64)
    return [shared, own]


def _worker_device(settings: Settings) -> Settings:
    """``device=auto`` spreads workers over the CUDA devices (worker i: cuda:i mod count)."""
    if settings.device != "auto":
        return settings
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return settings
    return settings.model_copy(update={"device": f"cuda:{settings.worker_index % count}"})


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("workers must be 1 or more, or auto")
    return number


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the HTTP server (settings: SCRIPTSERVE_* env vars)")
    p.add_argument("--host", default=None, help="listen address (default: SCRIPTSERVE_HOST)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: SCRIPTSERVE_PORT)")
    p.add_argument("--workers", type=_workers, default=None,
                   help="server processes on the port, or auto (one per core) "
                        "(default: SCRIPTSERVE_WORKERS, 1)")
    p.add_argument("--model-dir", default=None,
                   help="serve only the archive(s) in this read-only file or folder, e.g. KServe's "
                        "/mnt/models (default: SCRIPTSERVE_MODEL_DIR; docs/kubernetes.md)")
    p.add_argument("--model-name", default=None,
                   help="name of the model in --model-dir (default: SCRIPTSERVE_MODEL_NAME or 'model')")
    p.set_defaults(func=serve)
