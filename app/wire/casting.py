"""The dtype rule: when an input's dtype differs from the model's, cast it or refuse it.

The model's dtype for an input is known from its declared signature (the upload's ``inputs``
field) or its ``example_inputs``. Against it, on every protocol (native, v2 HTTP, gRPC):

- floating expected: floating, integer and bool inputs are cast (float64 -> float32 rounds to
  the nearest float32, as the model would compute anyway); a finite value that does not fit
  (overflow to inf) is refused;
- integer expected: integer and bool inputs are cast when every value fits the expected
  range; floating inputs are refused (no silent truncation);
- bool expected: only bool.

A refusal is 422 ``dtype_mismatch`` naming the input, the dtype sent and the dtype expected.
Where nothing declares the dtype and the model itself fails on a dtype (``Double and Float``),
``from_model_error`` turns torch's message into the same 422.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from app.errors import DtypeMismatchError

_TORCH_DTYPE_ERRORS = re.compile(
    r"same dtype|expected scalar type|expected .*dtype|dtype .* but got|"
    r"Input type \(.*\) and (weight|bias) type|must have the same dtype|found dtype",
    re.IGNORECASE,
)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _refuse(name: str, sent: torch.dtype, expected: torch.dtype, why: str) -> DtypeMismatchError:
    return DtypeMismatchError(
        f"input {name!r} has dtype {_name(sent)} but the model expects {_name(expected)}: {why}"
    )


def cast_input(name: str, tensor: torch.Tensor, expected: torch.dtype) -> torch.Tensor:
    """``tensor`` as ``expected`` under the rule above, or a ``DtypeMismatchError``."""
    sent = tensor.dtype
    if sent == expected:
        return tensor
    if expected.is_floating_point:
        cast = tensor.to(expected)
        if sent.is_floating_point and torch.finfo(expected).max < torch.finfo(sent).max:
            finite = torch.isfinite(tensor)
            if not torch.equal(finite, torch.isfinite(cast)):
                raise _refuse(name, sent, expected, f"some values overflow {_name(expected)}")
        return cast
    if expected == torch.bool:
        raise _refuse(name, sent, expected, "only bool tensors are accepted for it")
    if sent.is_floating_point or sent.is_complex:
        raise _refuse(name, sent, expected, "floating values are not cast to integers; send integers")
    if tensor.numel():
        info = torch.iinfo(expected)
        low, high = int(tensor.min()), int(tensor.max())
        if low < info.min or high > info.max:
            raise _refuse(name, sent, expected, f"values from {low} to {high} do not fit")
    return tensor.to(expected)


def adapt(
    names: Sequence[str], inputs: Sequence[torch.Tensor], expected: Mapping[str, torch.dtype]
) -> list[torch.Tensor]:
    """Positional inputs cast to the dtypes the model declares (unknown ones pass through)."""
    if not expected:
        return list(inputs)
    out = []
    for name, tensor in zip(names, inputs):
        want = expected.get(name)
        if want is not None and isinstance(tensor, torch.Tensor) and tensor.dtype != want:
            tensor = cast_input(name, tensor, want)
        out.append(tensor)
    return out


def from_model_error(
    message: str, names: Sequence[str], inputs: Sequence[torch.Tensor], model_dtype: torch.dtype | None
) -> DtypeMismatchError | None:
    """A ``dtype_mismatch`` for a model that failed on an input's dtype, or None.

    Only when torch's message is about dtypes and the model's parameters share one floating
    dtype that some floating input does not have: that input and that dtype are named.
    """
    if model_dtype is None or not _TORCH_DTYPE_ERRORS.search(message):
        return None
    for name, tensor in zip(names, inputs):
        if isinstance(tensor, torch.Tensor) and tensor.dtype != model_dtype:
            hint = "" if tensor.is_floating_point() else (
                ' (JSON numbers without a decimal point decode as int64; send 1.0 rather than 1, '
                'or give "dtype")')
            return _refuse(
                name, tensor.dtype, model_dtype,
                f"the model's parameters are {_name(model_dtype)}; send {_name(model_dtype)} "
                f"or declare the input's dtype at upload (example_inputs or inputs){hint}",
            )
    return None
