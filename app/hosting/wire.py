"""Calls and replies between the server and its model hosts as bytes: pickle, with tensors
written as their raw bytes (torch's own pickling goes through ``torch.save``: slower)."""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch


def _tensor(data: bytes | bytearray, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    kind = getattr(torch, dtype)
    if not data:
        return torch.empty(shape, dtype=kind)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(kind).reshape(shape)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is torch.Tensor and obj.device.type == "cpu" and not obj.requires_grad \
                and obj.layout == torch.strided and not obj.is_quantized:
            flat = obj.detach().contiguous().reshape(-1)
            if not flat.numel():
                return _tensor, (b"", str(obj.dtype).removeprefix("torch."), tuple(obj.shape))
            raw = memoryview(flat.view(torch.uint8).numpy())  # type: ignore[arg-type]
            return _tensor, (pickle.PickleBuffer(raw),
                             str(obj.dtype).removeprefix("torch."), tuple(obj.shape))
        return NotImplemented


def dumps(value: Any) -> bytes:
    """Pickle ``value`` (tensors as raw bytes)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=5).dump(value)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    """The inverse of ``dumps``."""
    return pickle.loads(data)
