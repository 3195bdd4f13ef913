"""Where the server is and who we are: URL, token, the client, errors as exit status."""


from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.config import Settings

Handler = Callable[[argparse.Namespace], int]


def client_options() -> argparse.ArgumentParser:
    """Options every command that talks to a server takes (a parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("server")
    g.add_argument("--url", default=None,
                   help="server address (default: http://SCRIPTSERVE_HOST:SCRIPTSERVE_PORT)")
    g.add_argument("--token", default=None,
                   help="bearer token (default: SCRIPTSERVE_ADMIN_TOKEN, else the local "
                   "store's .admin_token)")
    g.add_argument("--store", type=Path, default=None,
                   help="local model store holding .admin_token (default: SCRIPTSERVE_MODEL_STORE)")
    g.add_argument("--timeout-s", type=float, default=60.0, help="per-request timeout (seconds)")
    return p


def settings_for(args: argparse.Namespace) -> Settings:
    """Settings from the environment (the only reader of it), with ``--store`` applied."""
    return Settings(model_store=args.store) if args.store else Settings()


def server_url(args: argparse.Namespace, settings: Settings) -> str:
    if args.url:
        return args.url
    host = settings.host if settings.host not in {"0.0.0.0", "::", ""} else "127.0.0.1"
    return f"http://{host}:{settings.port}"


def resolve_token(args: argparse.Namespace, settings: Settings) -> str | None:
    """``--token``, else SCRIPTSERVE_ADMIN_TOKEN, else the local store's token file."""
    if args.token:
        return args.token
    if settings.admin_token:
        return settings.admin_token
    try:
        return settings.admin_token_file.read_text().strip() or None
    except OSError:
        return None


def make_client(args: argparse.Namespace) -> Any:
    from app.client import Client

    settings = settings_for(args)
    return Client(server_url(args, settings), resolve_token(args, settings), timeout_s=args.timeout_s)


def make_async_client(args: argparse.Namespace) -> Any:
    from app.client import AsyncClient

    settings = settings_for(args)
    return AsyncClient(server_url(args, settings), resolve_token(args, settings),
                       timeout_s=args.timeout_s)


def reports_errors(handler: Handler) -> Handler:
    """Turn client errors and bad local files into a message and exit status 1."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from app.client import ApiError, ClientError

        try:
            return handler(args)
        except ApiError as exc:
            print(f"error: {exc.message} ({exc.status_code} {exc.code})", file=sys.stderr)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
        return 1

    return run
