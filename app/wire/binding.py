"""Binding named inputs to ``forward``'s positional arguments, for every wire format."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from app.errors import InputError

T = TypeVar("T")


def bind(named: Mapping[str, T], names: Sequence[str], required: int) -> list[T]:
    """Order ``named`` as the arguments ``names``: no unknown names, every required one
    given, and optional ones left out only at the end."""
    expected = list(names)
    unknown = [n for n in named if n not in expected]
    if unknown:
        raise InputError(f"unknown inputs {sorted(unknown)}; the model's inputs are {expected}")
    missing = [n for n in expected[:required] if n not in named]
    if missing:
        raise InputError(f"missing inputs {missing}; the model's inputs are {expected}")
    given = [n for n in expected if n in named]
    if given != expected[: len(given)]:
        raise InputError(
            f"inputs {given} leave a gap: optional inputs can be left out only at the end"
        )
    return [named[n] for n in given]
