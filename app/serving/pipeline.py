"""One prediction through the server, whatever the protocol (native HTTP, v2 HTTP, gRPC).

Resolve the version (404 before the body is read), read the body, resolve again after the
last await before submitting (a version removed while the body arrived is never used, so
requests for the default version always reach one that is serving), decode, cast to the
model's declared dtypes (``app.wire.casting``), submit to the version's batcher, and
remember the shapes it showed (v2 model metadata, saved with the version).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import torch

from app.serving.model_version import ModelVersion
from app.serving.registry import Registry
from app.wire.casting import adapt


async def resolve_and_read(
    registry: Registry, name: str, version: int | None, read_body: Callable[[], Awaitable[bytes]]
) -> tuple[ModelVersion, bytes]:
    """The serving version and the request body; 404 / 503 before the body is read."""
    await registry.resolve(name, version)  # asks the store about a name it does not know
    body = await read_body()
    return registry.get(name, version), body


async def submit(mv: ModelVersion, inputs: Sequence[torch.Tensor], timeout_s: float) -> Any:
    """Cast inputs to the model's dtypes (or refuse them), run them through the version's
    batcher, and learn their shapes on success."""
    names = mv.model.signature.names
    tensors = adapt(names, inputs, mv.expected)
    output = await mv.batcher.submit(tensors, timeout_s)
    if mv.learnt.record(names, tensors, output):
        mv.learnt_changed()
    return output
