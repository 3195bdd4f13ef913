"""The ``scriptserve`` command: serve, and manage and query a server from the shell.

Each command group is a module here with ``register(subparsers)``; adding one is a line in
``COMMAND_MODULES``. Heavy imports (torch, uvicorn, rich) happen inside the commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from app import __version__
from app.cli.connection import client_options

COMMAND_MODULES = [
    "app.cli.serve",
    "app.cli.manage",
    "app.cli.default",
    "app.cli.predict",
    "app.cli.bench",
    "app.compiler.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scriptserve", description="Serve TorchScript models, and talk to a running server.",
        parents=[client_options(top_level=True)],
    )
    parser.add_argument("--version", action="version", version=f"scriptserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
