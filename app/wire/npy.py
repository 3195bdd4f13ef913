"""Binary bodies: ``application/x-npy`` (one tensor) and ``application/x-npz`` (several).

Request: ``x-npy`` holds the single input; ``x-npz`` holds inputs keyed by ``forward``
argument name (or ``arr_0``, ``arr_1``... in positional order, as ``numpy.savez`` writes
them). Response with ``Accept: application/x-npy`` for a single-tensor output, or
``application/x-npz`` for any output (tuples flatten to ``"0"``, ``"1"``; dicts to their keys,
nested with ``.``). Pickled object arrays are never loaded.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from app.errors import BadRequestError, InputError
from app.wire.binding import bind
from app.wire.native import to_wire

NPY = "application/x-npy"
NPZ = "application/x-npz"
_NUMERIC_KINDS = "biuf"


def _tensor(array: Any, name: str) -> torch.Tensor:
    if not isinstance(array, np.ndarray) or array.dtype.kind not in _NUMERIC_KINDS:
        dtype = getattr(array, "dtype", "?")
        raise InputError(f"input {name!r}: expected a numeric array, got dtype {dtype}")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.from_numpy(np.ascontiguousarray(array))


def decode_npy(body: bytes, arg_names: Sequence[str]) -> list[torch.Tensor]:
    """One ``.npy`` array -> the single input."""
    if len(arg_names) != 1:
        raise InputError(
            f"this model takes {len(arg_names)} inputs {list(arg_names)}: send {NPZ} keyed by name"
        )
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadRequestError(f"body is not a valid .npy array ({exc})") from None
    return [_tensor(array, arg_names[0])]


def decode_npz(body: bytes, arg_names: Sequence[str], required: int, max_bytes: int) -> list[torch.Tensor]:
    """A ``.npz`` archive -> positional inputs (by name, or arr_0.. in order)."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            total = sum(i.file_size for i in zf.infolist())
    except zipfile.BadZipFile:
        raise BadRequestError("body is not a valid .npz archive") from None
    if total > max_bytes:
        raise BadRequestError(f".npz expands to {total} bytes, over the limit of {max_bytes}")
    try:
        archive = np.load(io.BytesIO(body), allow_pickle=False)
        arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, EOFError) as exc:
        raise BadRequestError(f"body is not a valid .npz archive ({exc})") from None
    names = list(arg_names)
    if all(k.startswith("arr_") for k in arrays):
        ordered = [arrays.get(f"arr_{i}") for i in range(len(arrays))]
        if any(a is None for a in ordered):
            raise InputError("positional .npz arrays must be arr_0, arr_1, ... without gaps")
        keyed = dict(zip(names, ordered))
        if len(ordered) > len(names):
            raise InputError(f"got {len(ordered)} arrays; the model's inputs are {names}")
    else:
        keyed = arrays
    given = bind({n: n for n in keyed}, names, required)
    return [_tensor(keyed[n], n) for n in given]


def _flatten(value: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(value, np.ndarray):
        out[prefix or "output"] = value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), out)
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix or "output"] = np.asarray(value)


def encode(output: Any, media_type: str) -> bytes:
    """Serialise a model output as ``.npy`` (single tensor only) or ``.npz``."""
    wire = to_wire(output, json=False)
    buffer = io.BytesIO()
    if media_type == NPY:
        if not isinstance(wire, np.ndarray):
            raise InputError(f"the output is not a single tensor; ask for {NPZ} or JSON")
        np.save(buffer, wire, allow_pickle=False)
    else:
        arrays: dict[str, np.ndarray] = {}
        _flatten(wire, "", arrays)
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types the kwargs as flags
    return buffer.getvalue()
