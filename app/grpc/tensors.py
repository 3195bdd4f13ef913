"""Open Inference Protocol tensors over gRPC: ``ModelInferRequest`` <-> torch tensors.

Inputs come as ``raw_input_contents`` (one little-endian buffer per input, in input order,
as Triton's and KServe's clients send them) or as typed ``contents``. Outputs always go back
as ``raw_output_contents``, as Triton's server does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from app.errors import BadRequestError, InputError
from app.grpc.proto import open_inference_pb2 as pb
from app.wire.dtypes import BY_DATATYPE, DATATYPES
from app.wire.shapes import name_outputs
from app.wire.v2 import output_array

_MAX_DIM = 2**31 - 1
# Which typed ``contents`` field carries each datatype (FP16 and BF16 only travel raw).
_CONTENTS = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
}


def parameter(params: Any, key: str) -> Any:
    """The value of one ``InferParameter`` in a parameters map, or None."""
    if key not in params:
        return None
    p = params[key]
    choice = p.WhichOneof("parameter_choice")
    return getattr(p, choice) if choice else None


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, torch.Tensor]:
    """Named input tensors of a request; 400 for anything malformed."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequestError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    if not request.inputs:
        raise BadRequestError("the request has no inputs")
    out: dict[str, torch.Tensor] = {}
    for i, item in enumerate(request.inputs):
        name = item.name
        if name in out:
            raise BadRequestError(f"input {name!r} is given twice")
        out[name] = _decode(item, raw[i] if raw else None)
    return out


def _decode(item: Any, raw: bytes | None) -> torch.Tensor:
    name, datatype = item.name, item.datatype
    known = BY_DATATYPE.get(datatype)
    if known is None:
        raise BadRequestError(
            f"input {name!r}: datatype {datatype!r} is not supported; use one of {list(DATATYPES)}"
        )
    shape = list(item.shape)
    if not all(0 <= d <= _MAX_DIM for d in shape):
        raise BadRequestError(f"input {name!r}: shape must be a list of integers from 0 to {_MAX_DIM}")
    count = math.prod(shape)
    if raw is not None:
        need = count * known.wire.itemsize
        if len(raw) != need:
            raise BadRequestError(
                f"input {name!r}: {len(raw)} bytes of raw_input_contents, shape {shape} of "
                f"{datatype} needs {need}"
            )
        array = np.frombuffer(raw, dtype=known.wire, count=count).reshape(shape).copy()
        tensor = torch.from_numpy(array)
        return tensor.view(torch.bfloat16) if datatype == "BF16" else tensor
    field = _CONTENTS.get(datatype)
    if field is None:
        raise BadRequestError(f"input {name!r}: {datatype} data must be sent as raw_input_contents")
    values = getattr(item.contents, field)
    if len(values) != count:
        raise BadRequestError(f"input {name!r}: {len(values)} values do not fit shape {shape}")
    try:
        array = np.asarray(values, dtype=known.json).reshape(shape)
    except (ValueError, OverflowError) as exc:
        raise BadRequestError(f"input {name!r}: values do not fit {datatype}: {exc}") from None
    return torch.from_numpy(np.ascontiguousarray(array))


def encode_response(
    model: str, version: int, request: pb.ModelInferRequest, output: Any
) -> pb.ModelInferResponse:
    """A model output as a ``ModelInferResponse`` with raw output contents."""
    named = name_outputs(output)
    wanted = [o.name for o in request.outputs]
    if wanted:
        available = {n for n, _ in named}
        unknown = [n for n in wanted if n not in available]
        if unknown:
            raise InputError(
                f"unknown outputs {unknown}; this model's outputs are {[n for n, _ in named]}"
            )
        keep = set(wanted)
        named = [(n, v) for n, v in named if n in keep]
    response = pb.ModelInferResponse(model_name=model, model_version=str(version), id=request.id)
    for name, value in named:
        datatype, array = output_array(name, value)
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
    return response
