"""Wire format <-> tensors: JSON bodies decoded with orjson + numpy, no per-element loops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import torch

from app.errors import BadRequestError, InputError, exception_line
from app.wire.binding import bind
from app.wire.dtypes import BY_NAME, NAMES

_TENSOR_KEYS = {"data", "shape", "dtype"}


def parse_json(body: bytes) -> Any:
    """Parse a JSON body, or raise a 400 saying why not."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None


def is_tensor_object(value: Any) -> bool:
    """True for the explicit form ``{"data": [...], "shape": [...], "dtype": "..."}``."""
    return isinstance(value, dict) and "data" in value and set(value) <= _TENSOR_KEYS


def to_tensor(value: Any, name: str) -> torch.Tensor:
    """Decode one input (nested list, number, or explicit tensor object) to a CPU tensor."""
    dtype_name: str | None = None
    shape = None
    data = value
    if isinstance(value, dict):
        if not is_tensor_object(value):
            raise InputError(
                f"input {name!r}: expected a nested list or "
                '{"data": [...], "shape": [...], "dtype": "..."}, '
                f"got an object with keys {sorted(value)[:8]}"
            )
        data = value["data"]
        dtype_name = value.get("dtype")
        shape = value.get("shape")
        if dtype_name is not None and dtype_name not in BY_NAME:
            raise InputError(
                f"input {name!r}: unknown dtype {dtype_name!r}; expected one of {list(NAMES)}"
            )
    if isinstance(data, (str, bytes)) or data is None:
        raise InputError(f"input {name!r}: expected numbers, got {type(data).__name__}")
    try:
        if dtype_name is None:
            array = np.asarray(data)
            if array.dtype == np.float64:
                array = array.astype(np.float32)
            elif array.dtype.kind not in "iufb":
                raise ValueError(f"non-numeric values (numpy dtype {array.dtype})")
        else:
            array = np.asarray(data, dtype=BY_NAME[dtype_name].json)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(
            f"input {name!r}: not a rectangular numeric array ({exception_line(exc, 200)})"
        ) from None
    if shape is not None:
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            raise InputError(f"input {name!r}: shape must be a list of non-negative integers")
        try:
            array = array.reshape(shape)
        except ValueError:
            raise InputError(
                f"input {name!r}: {array.size} values do not fit shape {shape}"
            ) from None
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if dtype_name == "bfloat16":
        tensor = tensor.to(torch.bfloat16)
    return tensor


def decode_inputs(payload: Any, arg_names: Sequence[str], required: int) -> list[torch.Tensor]:
    """Turn ``{"inputs": X}`` into positional tensors for a forward with ``arg_names``."""
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequestError('request body must be a JSON object {"inputs": ...}')
    inputs = payload["inputs"]
    n = len(arg_names)
    if n == 1 and not (isinstance(inputs, dict) and set(inputs) == {arg_names[0]}):
        return [to_tensor(inputs, arg_names[0])]
    if isinstance(inputs, dict) and not is_tensor_object(inputs):
        given = bind({a: a for a in inputs}, arg_names, required)
        return [to_tensor(inputs[a], a) for a in given]
    if isinstance(inputs, list) and n > 1:
        if not required <= len(inputs) <= n:
            expected = str(n) if required == n else f"{required} to {n}"
            raise InputError(
                f"expected {expected} inputs {list(arg_names)}, got a list of {len(inputs)}"
            )
        return [to_tensor(v, arg_names[i]) for i, v in enumerate(inputs)]
    if n == 0:
        raise InputError("this model's forward takes no inputs")
    raise InputError(
        f"this model takes {n} inputs {list(arg_names)}: send a list in that order "
        "or an object keyed by input name"
    )


def to_wire(value: Any, json: bool = True) -> Any:
    """Make a model output JSON-ready (numpy arrays for tensors), keeping its structure.

    ``json=False`` (binary bodies) keeps float16; bfloat16, which numpy lacks, becomes float32.
    """
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16 or (json and value.dtype == torch.float16):
            value = value.float()
        if value.is_complex():
            raise InputError("the model returned a complex tensor, which JSON cannot carry")
        return np.ascontiguousarray(value.detach().cpu().numpy())
    if isinstance(value, (list, tuple)):
        return [to_wire(v, json) for v in value]
    if isinstance(value, dict):
        return {str(k): to_wire(v, json) for k, v in value.items()}
    return value


def dump_json(content: Any) -> bytes:
    """Serialise a response with numpy arrays inline."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
