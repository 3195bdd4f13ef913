"""Reading a prediction's inputs from the command line: --data JSON or --input FILE."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


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
