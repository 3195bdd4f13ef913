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


def command_parents() -> list[argparse.ArgumentParser]:
    """Parents of a command that talks to a server and can print JSON: the client options and
    ``--json``."""
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    return [client_options(), json_flag]


def client_options(top_level: bool = False) -> argparse.ArgumentParser:
    """Options every command that talks to a server takes (a parent parser).

    They are accepted before the command (``scriptserve --url URL models``) and after it
    (``scriptserve models --url URL``): the command's copy leaves an option alone unless it
    is given there, so the top-level value stands.
    """

    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS

    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("server")
    g.add_argument("--url", default=default(None),
                   help="server address, e.g. localhost:8000 (default: "
                   "http://SCRIPTSERVE_HOST:SCRIPTSERVE_PORT)")
    g.add_argument("--token", default=default(None),
                   help="bearer token (default: SCRIPTSERVE_ADMIN_TOKEN, else the local "
                   "store's .admin_token)")
    g.add_argument("--store", type=Path, default=default(None),
                   help="local model store holding .admin_token (default: SCRIPTSERVE_MODEL_STORE)")
    g.add_argument("--timeout-s", type=float, default=default(60.0),
                   help="per-request timeout (seconds)")
    return p


def settings_for(args: argparse.Namespace) -> Settings:
    """Settings from the environment (the only reader of it), with ``--store`` applied."""
    return Settings(model_store=args.store) if args.store else Settings()


def server_url(args: argparse.Namespace, settings: Settings) -> str:
    """``--url`` (``http://`` added when it has no scheme), else the configured host and port."""
    if args.url:
        url = args.url.strip().rstrip("/")
        return url if "://" in url else f"http://{url}"
    host = settings.host if settings.host not in {"0.0.0.0", "::", ""} else "127.0.0.1"
    return f"http://{host}:{settings.port}"


def resolve_token(args: argparse.Namespace, settings: Settings) -> str | None:
    """``--token``, else SCRIPTSERVE_ADMIN_TOKEN, else the local store's token file."""
    return token_source(args, settings)[0]


def token_source(args: argparse.Namespace, settings: Settings) -> tuple[str | None, str]:
    """The token to send and, in words, where it came from (for error messages)."""
    if args.token:
        return args.token, "--token"
    if settings.admin_token:
        return settings.admin_token, "SCRIPTSERVE_ADMIN_TOKEN"
    path = settings.admin_token_file
    try:
        token = path.read_text().strip() or None
    except OSError:
        token = None
    return token, f"{path}" if token else "nowhere"


def make_client(args: argparse.Namespace) -> Any:
    from app.client import Client

    settings = settings_for(args)
    return Client(server_url(args, settings), resolve_token(args, settings), timeout_s=args.timeout_s)


def make_async_client(args: argparse.Namespace) -> Any:
    from app.client import AsyncClient

    settings = settings_for(args)
    return AsyncClient(server_url(args, settings), resolve_token(args, settings),
                       timeout_s=args.timeout_s)


def auth_hint(args: argparse.Namespace) -> str:
    """What to do about a 401: where the token came from, and where it can come from."""
    settings = settings_for(args)
    token, source = token_source(args, settings)
    ways = ("pass --token TOKEN, set SCRIPTSERVE_ADMIN_TOKEN, or use --store DIR where "
            "DIR/.admin_token is the server's generated token")
    if token is None:
        looked = f"--token, SCRIPTSERVE_ADMIN_TOKEN, {settings.admin_token_file}"
        return f"no token was sent (none in {looked}): {ways}"
    return f"the server refused the token from {source}: {ways}"


def reports_errors(handler: Handler) -> Handler:
    """Turn client errors and bad local files into a message and exit status 1."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from app.client import ApiError, ClientError

        try:
            return handler(args)
        except ApiError as exc:
            print(f"error: {exc.message} ({exc.status_code} {exc.code})", file=sys.stderr)
            if exc.status_code == 401:
                print(f"hint: {auth_hint(args)}", file=sys.stderr)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
        return 1

    return run
