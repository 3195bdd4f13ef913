"""Open Inference Protocol (KServe v2) tensors: JSON and binary bodies <-> torch tensors.

A request is a JSON header, optionally followed by raw tensor bytes (the binary tensor
extension): ``Inference-Header-Content-Length`` says where the JSON ends, and each input
with ``parameters.binary_data_size`` takes that many bytes, in input order. Responses put
outputs in the JSON (flat, row-major) or, when asked, after it as raw little-endian bytes.
Decoding and encoding use numpy and orjson: no loop over elements.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import torch

from app.errors import BadRequestError, InputError, PayloadTooLargeError, exception_line
from app.serving.runtime import Signature
from app.wire.binding import bind
from app.wire.dtypes import BY_DATATYPE, BY_TORCH, DATATYPES
from app.wire.shapes import OUTPUT_PREFIX, UNKNOWN, TensorSpec, name_outputs, spec_json

if TYPE_CHECKING:
    from app.serving.registry import ModelVersion

HEADER_LENGTH = "inference-header-content-length"
_MAX_DIM = 2**31 - 1
PLATFORM = "pytorch_libtorch"  # Triton's name for TorchScript models
_TUPLE_OF_TENSORS = re.compile(r"Tuple\[Tensor(, Tensor)*\]")


@dataclass(frozen=True)
class OutputRequest:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded ``/infer`` body."""

    id: str | None
    inputs: dict[str, torch.Tensor]
    outputs: tuple[OutputRequest, ...] | None
    binary_output: bool
    timeout_s: float | None


def header_length(raw: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` value, checked."""
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise BadRequestError(f"Inference-Header-Content-Length must be an integer, got {raw[:40]!r}")
    return int(raw)


def inflate(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` without inflating past ``max_bytes``."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in {"gzip", "deflate"}:
        raise BadRequestError(f"unsupported Content-Encoding {encoding!r}: use gzip or deflate")
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequestError(f"body is not valid {encoding} data: {exc}") from None
    if len(out) > max_bytes:
        raise PayloadTooLargeError(f"inflated body exceeds the limit of {max_bytes} bytes")
    return out


def parse_request(body: bytes, json_length: int | None) -> InferRequest:
    """Decode an inference request (JSON, or JSON followed by binary tensor data)."""
    size = len(body)
    if json_length is not None and json_length > size:
        raise BadRequestError(
            f"Inference-Header-Content-Length is {json_length} but the body has {size} bytes"
        )
    view = memoryview(body)
    head = view if json_length is None else view[:json_length]
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"inference header is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequestError('request must be a JSON object with a non-empty "inputs" list')
    params = _parameters(doc, "request")
    offset = size if json_length is None else json_length
    inputs: dict[str, torch.Tensor] = {}
    for item in doc["inputs"]:
        name, tensor, used = _decode_input(item, view, offset)
        if name in inputs:
            raise BadRequestError(f"input {name!r} is given twice")
        inputs[name] = tensor
        offset += used
    if offset != size:
        raise BadRequestError(
            f"{size - offset} bytes of binary data are not claimed by any input's binary_data_size"
        )
    return InferRequest(
        id=_request_id(doc.get("id")),
        inputs=inputs,
        outputs=_output_requests(doc.get("outputs")),
        binary_output=_flag(params, "binary_data_output", "request"),
        timeout_s=_timeout_s(params.get("timeout")),
    )


def _decode_input(item: Any, body: memoryview, offset: int) -> tuple[str, torch.Tensor, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise BadRequestError('each input must be an object with "name", "shape", "datatype"')
    name = item["name"]
    datatype = item.get("datatype")
    if datatype not in BY_DATATYPE:
        raise BadRequestError(
            f"input {name!r}: datatype {datatype!r} is not supported; use one of {list(DATATYPES)}"
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _MAX_DIM for d in shape
    ):
        raise BadRequestError(
            f"input {name!r}: shape must be a list of integers from 0 to {_MAX_DIM}"
        )
    count = math.prod(shape)  # exact: Python integers do not overflow
    size = _parameters(item, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequestError(f"input {name!r}: binary_data_size must be a non-negative integer")
        if "data" in item:
            raise BadRequestError(f"input {name!r}: give either data or binary_data_size, not both")
        wire = BY_DATATYPE[datatype].wire
        if size != count * wire.itemsize:
            raise BadRequestError(
                f"input {name!r}: binary_data_size is {size} bytes, shape {shape} of {datatype} "
                f"needs {count * wire.itemsize}"
            )
        if offset + size > len(body):
            raise BadRequestError(f"input {name!r}: the body ends before its {size} bytes of data")
        if count == 0:
            array = np.empty(shape, dtype=wire)
        else:  # copy: the request body is read-only, and torch wants writable memory
            array = np.frombuffer(body, dtype=wire, count=count, offset=offset).reshape(shape).copy()
        tensor = torch.from_numpy(array)
        if datatype == "BF16":
            tensor = tensor.view(torch.bfloat16)
        return name, tensor, size
    if "data" not in item:
        raise BadRequestError(f"input {name!r}: no data and no binary_data_size")
    data = item["data"]
    if not isinstance(data, list):
        raise BadRequestError(f"input {name!r}: data must be a list of values")
    try:
        array = np.asarray(data, dtype=BY_DATATYPE[datatype].json)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequestError(
            f"input {name!r}: data is not a rectangular array of {datatype} ({exception_line(exc, 200)})"
        ) from None
    if array.size != count:
        raise BadRequestError(f"input {name!r}: {array.size} values do not fit shape {shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array.reshape(shape)))
    if datatype == "BF16":
        tensor = tensor.to(torch.bfloat16)
    return name, tensor, 0


def bind_inputs(inputs: dict[str, torch.Tensor], signature: Signature) -> list[torch.Tensor]:
    """Order named inputs as ``forward``'s positional arguments."""
    return bind(inputs, signature.names, signature.required)


def encode_response(
    model: str, version: int, request: InferRequest, output: Any
) -> tuple[bytes, int | None]:
    """Serialise a model output; returns the body and the JSON header length (if binary)."""
    named = name_outputs(output)
    if request.outputs is not None:
        available = {n for n, _ in named}
        unknown = [o.name for o in request.outputs if o.name not in available]
        if unknown:
            raise InputError(
                f"unknown outputs {unknown}; this model's outputs are {[n for n, _ in named]}"
            )
        binary = {o.name: o.binary for o in request.outputs}
        named = [(n, v) for n, v in named if n in binary]
    else:
        binary = dict.fromkeys((n for n, _ in named), request.binary_output)
    entries: list[dict[str, Any]] = []
    chunks: list[memoryview] = []
    for name, value in named:
        datatype, array = output_array(name, value)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary[name]:
            chunk = np.ascontiguousarray(array).data.cast("B")
            entry["parameters"] = {"binary_data_size": chunk.nbytes}
            chunks.append(chunk)
        else:
            entry["data"] = _json_ready(datatype, array)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": entries}
    if request.id is not None:
        doc["id"] = request.id
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)


def output_array(name: str, value: Any) -> tuple[str, np.ndarray]:
    """The v2 datatype and the raw (wire-layout) array of one output."""
    if isinstance(value, bool):
        value = torch.tensor(value)
    elif isinstance(value, (int, float)):
        value = torch.tensor(value, dtype=torch.int64 if isinstance(value, int) else torch.float64)
    if not isinstance(value, torch.Tensor):
        raise InputError(
            f"output {name!r} is a {type(value).__name__}, which the v2 protocol cannot carry here"
        )
    known = BY_TORCH.get(value.dtype)
    if known is None:
        raise InputError(f"output {name!r} has dtype {value.dtype}, which has no v2 datatype here")
    datatype = known.datatype
    tensor = value.detach().cpu()
    if datatype == "BF16":
        tensor = tensor.view(torch.int16)  # the 16 raw bits; read back as uint16
    return datatype, tensor.contiguous().numpy()


def _json_ready(datatype: str, array: np.ndarray) -> np.ndarray:
    if datatype == "BF16":
        bits = array.view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(-1)
    return np.ascontiguousarray(array).reshape(-1)


def _output_requests(raw: Any) -> tuple[OutputRequest, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequestError('"outputs" must be a list of {"name": ...} objects')
    requested = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequestError('each requested output must be an object with a "name"')
        params = _parameters(item, f"output {item['name']!r}")
        if params.get("classification"):
            raise BadRequestError("the classification extension is not supported")
        requested.append(OutputRequest(item["name"], _flag(params, "binary_data", "output")))
    return tuple(requested)


def _parameters(doc: dict[str, Any], where: str) -> dict[str, Any]:
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequestError(f"{where}: parameters must be an object")
    return params


def _flag(params: dict[str, Any], key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise BadRequestError(f"{where} parameter {key!r} must be true or false")
    return value


def _timeout_s(raw: Any) -> float | None:
    """Triton's ``timeout`` request parameter is in microseconds."""
    if raw is None:
        return None
    if not isinstance(raw, (int, float)) or isinstance(raw, bool) or raw <= 0:
        raise BadRequestError("parameter 'timeout' must be a positive number of microseconds")
    return min(float(raw) / 1e6, 3600.0)


def _request_id(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise BadRequestError('"id" must be a string')
    return raw


def model_metadata(mv: ModelVersion, versions: list[int]) -> dict[str, Any]:
    """v2 model metadata: inputs and outputs as far as they are known.

    A declared signature (the upload's ``inputs`` / ``outputs``) is shown as declared.
    Otherwise what the example inputs and successful requests showed (``mv.learnt``, seeded
    from the stored signature), the first dimension -1 when requests are batched. A tensor
    not yet known has datatype ``UNKNOWN`` and shape ``[]``.
    """
    inputs, outputs = tensor_specs(mv)
    return {
        "name": mv.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
    }


def tensor_specs(mv: ModelVersion) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The v2 metadata tensors (``name``, ``datatype``, ``shape``) of inputs and outputs."""
    learnt = mv.learnt
    batched = mv.batcher.state.enabled is True
    spec = mv.stored.meta.get("io_spec") or {}
    declared = spec if spec.get("source") == "declared" else {}
    declared_inputs = {t.get("name"): t for t in declared.get("inputs", []) if isinstance(t, dict)}
    inputs = []
    for arg in mv.model.signature.args:
        seen = learnt.inputs.get(arg.name)
        if arg.name in declared_inputs or seen is None:
            entry = _declared_entry(declared_inputs.get(arg.name), arg.name)
        else:
            entry = _spec_entry(seen, batched)
        if arg.has_default:
            entry["parameters"] = {"optional": True}
        inputs.append(entry)
    if declared.get("outputs"):
        outputs = [_declared_entry(t, str(t.get("name"))) for t in declared["outputs"]
                   if isinstance(t, dict)]
    elif learnt.outputs:
        outputs = [_spec_entry(s, batched) for s in learnt.outputs]
    else:
        outputs = [_declared_entry(None, n) for n in _output_names(mv.model.signature.returns)]
    return inputs, outputs


def _spec_entry(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    entry = spec_json(spec)
    if batched and entry["shape"]:
        entry["shape"][0] = -1
    return entry


def _declared_entry(declared: dict[str, Any] | None, name: str) -> dict[str, Any]:
    if declared and declared.get("datatype") in BY_DATATYPE and isinstance(declared.get("shape"), list):
        return {"name": name, "datatype": declared["datatype"], "shape": list(declared["shape"])}
    return {"name": name, "datatype": UNKNOWN, "shape": []}


def _output_names(returns: str) -> list[str]:
    """Output names implied by ``forward``'s return type, before any request."""
    if returns == "Tensor":
        return [f"{OUTPUT_PREFIX}__0"]
    if _TUPLE_OF_TENSORS.fullmatch(returns):
        return [f"{OUTPUT_PREFIX}__{i}" for i in range(returns.count("Tensor"))]
    return []
