"""One prediction, independent of the web framework: decode, submit to the batcher, encode."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from app.errors import UnsupportedMediaTypeError
from app.serving import pipeline
from app.serving.registry import ModelVersion
from app.wire import npy
from app.wire.native import decode_inputs, dump_json, parse_json, to_wire

# curl -d sends form-urlencoded by default; the body is still JSON, so take it.
JSON_TYPES = frozenset({"application/json", "text/plain", "application/x-www-form-urlencoded", ""})


@dataclass(frozen=True)
class PredictionResult:
    body: bytes
    media_type: str
    headers: dict[str, str]


def decode(content_type: str, body: bytes, mv: ModelVersion, max_bytes: int) -> list[torch.Tensor]:
    """Request body -> positional input tensors, by content type."""
    signature = mv.model.signature
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        inputs = decode_inputs(parse_json(body), signature.names, signature.required)
        return [_as_expected(mv, name, t) for name, t in zip(signature.names, inputs)]
    if content_type == npy.NPY:
        return npy.decode_npy(body, signature.names)
    if content_type == npy.NPZ:
        return npy.decode_npz(body, signature.names, signature.required, max_bytes)
    raise UnsupportedMediaTypeError(
        f"unsupported content type {content_type!r}; send application/json, {npy.NPY} or {npy.NPZ}"
    )


def _as_expected(mv: ModelVersion, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """JSON integers for an input the model is known to take as floats become those floats.

    JSON has one number type: ``[[1, 2]]`` decodes as int64. Where the version's signature
    (declared, example inputs, earlier successful requests) shows a floating dtype, use it.
    """
    if tensor.dtype != torch.int64:
        return tensor
    seen = mv.learnt.inputs.get(name)
    expected = mv.expected.get(name) or (seen.dtype if seen is not None else None)
    if expected is not None and expected.is_floating_point:
        return tensor.to(expected)
    return tensor


async def predict(
    mv: ModelVersion, content_type: str, accept: str, body: bytes, timeout_s: float, max_bytes: int
) -> PredictionResult:
    """Run one request through ``mv``'s batcher and encode the output as asked."""
    inputs = decode(content_type.split(";")[0].strip().lower(), body, mv, max_bytes)
    output = await pipeline.submit(mv, inputs, timeout_s)
    if npy.NPY in accept or npy.NPZ in accept:
        media_type = npy.NPY if npy.NPY in accept else npy.NPZ
        headers = {"X-Model": mv.name, "X-Model-Version": str(mv.version)}
        return PredictionResult(npy.encode(output, media_type), media_type, headers)
    content = {"model": mv.name, "version": mv.version, "outputs": to_wire(output)}
    return PredictionResult(dump_json(content), "application/json", {})
