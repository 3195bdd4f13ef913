"""Example inputs stored with a version: a first forward pass, and the batch-safety probe."""

from __future__ import annotations

from typing import Any

import torch

from app.compiler.checks import example_tensors
from app.compiler.spec import CompileFailure
from app.errors import ModelLoadError, exception_line
from app.serving.runtime import LoadedModel


def example_inputs(meta: dict[str, Any]) -> list[torch.Tensor] | None:
    """Tensors for the ``example_inputs`` recorded in a version's metadata, if any."""
    spec = meta.get("example_inputs")
    if not spec:
        return None
    try:
        return list(example_tensors(spec))
    except CompileFailure as exc:
        raise ModelLoadError(f"example_inputs cannot be built: {exc}") from None


def warm_up(model: LoadedModel, inputs: list[torch.Tensor]) -> Any:
    """Run the model once on its examples and return the output; an error here is the
    upload's fault (422)."""
    try:
        return model.forward(inputs)
    except Exception as exc:
        raise ModelLoadError(f"the model fails on its example_inputs: {exception_line(exc, 500)}") from None
