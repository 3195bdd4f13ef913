"""Printing results: a rich console for people, JSON on stdout for programs."""

from __future__ import annotations

import sys
from typing import Any


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_json(value: Any, indent: bool = True) -> None:
    """Machine-readable output on stdout (numpy arrays as lists)."""
    import orjson

    option = orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
    sys.stdout.write(orjson.dumps(value, option=option).decode() + "\n")
