"""The one table of tensor element types: native names, v2 datatypes, torch and numpy layouts.

Native JSON bodies name dtypes as torch does (``float32``); the Open Inference Protocol uses
its datatypes (``FP32``). Raw bytes travel little-endian; numpy has no bfloat16, so BF16
travels as its 16 raw bits and JSON numbers for it are parsed as float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DType:
    """One element type as every layer names it."""

    name: str
    """Native name, also the ``torch`` attribute: ``float32``."""
    datatype: str
    """Open Inference Protocol datatype: ``FP32``."""
    torch: torch.dtype
    wire: np.dtype
    """Layout of raw (binary) data."""
    json: np.dtype
    """How JSON numbers are parsed for this type."""


def _dtype(name: str, datatype: str, wire: str, json: str | None = None) -> DType:
    return DType(name, datatype, getattr(torch, name), np.dtype(wire), np.dtype(json or wire))


TABLE: tuple[DType, ...] = (
    _dtype("bool", "BOOL", "?"),
    _dtype("uint8", "UINT8", "u1"),
    _dtype("int8", "INT8", "i1"),
    _dtype("int16", "INT16", "<i2"),
    _dtype("int32", "INT32", "<i4"),
    _dtype("int64", "INT64", "<i8"),
    _dtype("float16", "FP16", "<f2"),
    _dtype("float32", "FP32", "<f4"),
    _dtype("float64", "FP64", "<f8"),
    _dtype("bfloat16", "BF16", "<u2", json="<f4"),
)
BY_NAME: dict[str, DType] = {d.name: d for d in TABLE}
BY_DATATYPE: dict[str, DType] = {d.datatype: d for d in TABLE}
BY_TORCH: dict[torch.dtype, DType] = {d.torch: d for d in TABLE}
NAMES: tuple[str, ...] = tuple(sorted(BY_NAME))
DATATYPES: tuple[str, ...] = tuple(d.datatype for d in TABLE)
