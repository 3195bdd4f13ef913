"""What the client commands share: where the server is, the token, inputs, output, errors."""

from __future__ import annotations

import argparse
import functools
import json
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


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_json(value: Any, indent: bool = True) -> None:
    """Machine-readable output on stdout (numpy arrays as lists)."""
    import orjson

    option = orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
    sys.stdout.write(orjson.dumps(value, option=option).decode() + "\n")


def load_inputs(data: str | None, files: list[str] | None) -> Any:
    """Inputs from ``--data JSON`` or ``--input [ARG=]FILE`` (.npy or .json; - for stdin)."""
    if data is not None and files:
        raise ValueError("give --data or --input, not both")
    if data is not None:
        return _unwrap(json.loads(data))
    if not files:
        raise ValueError("no inputs: give --data JSON or --input FILE (.npy or .json)")
    named: dict[str, Any] = {}
    positional: list[Any] = []
    for spec in files:
        arg, sep, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        value = _read_input(path)
        if sep:
            named[arg] = value
        else:
            positional.append(value)
    if named and positional:
        raise ValueError("name every --input (ARG=FILE) or none of them")
    if named:
        return named
    return positional[0] if len(positional) == 1 else positional


def _read_input(path: str) -> Any:
    if path == "-":
        return _unwrap(json.load(sys.stdin))
    if path.endswith(".npy"):
        import numpy as np

        return np.load(path, allow_pickle=False)
    with open(path, "rb") as fh:
        return _unwrap(json.load(fh))


def _unwrap(value: Any) -> Any:
    """Accept a whole request body ``{"inputs": X}`` as well as X."""
    if isinstance(value, dict) and set(value) == {"inputs"}:
        return value["inputs"]
    return value


def input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--data", default=None,
                   help='inputs as JSON, e.g. \'[[0.1, 0.2]]\' or \'{"x": [[1]], "y": [[2]]}\'')
    p.add_argument("-i", "--input", action="append", metavar="[ARG=]FILE",
                   help="an input from a .npy or .json file (- reads JSON from stdin); repeat "
                   "for several inputs, in order or as ARG=FILE")
    p.add_argument("--version", type=int, default=None, help="model version (default: highest)")
