"""What a model version's tensors look like: names, dtypes, shapes seen in real requests.

TorchScript schemas name ``forward``'s arguments but not their dtypes or shapes, and name
no outputs at all. The v2 protocol's model metadata wants both, so each version keeps what
its successful requests showed: a dimension that differed between requests becomes -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

OUTPUT_PREFIX = "output"
SINGLE_OUTPUT = f"{OUTPUT_PREFIX}__0"


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor as seen so far; -1 marks a dimension that varied."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    def covers(self, tensor: torch.Tensor) -> bool:
        """True if the tensor adds nothing new: same dtype, and every fixed dim equal."""
        shape = tensor.shape
        return (tensor.dtype == self.dtype and len(shape) == len(self.shape)
                and all(a == b or a == -1 for a, b in zip(self.shape, shape)))

    def merge(self, dtype: torch.dtype, shape: tuple[int, ...]) -> TensorSpec:
        """This spec widened to cover one more observation."""
        if len(shape) != len(self.shape):
            return TensorSpec(self.name, dtype, shape)
        merged = tuple(a if a == b else -1 for a, b in zip(self.shape, shape))
        return TensorSpec(self.name, dtype, merged)


def name_outputs(value: Any, prefix: str | None = None) -> list[tuple[str, Any]]:
    """Flatten a model output into named leaves.

    A tensor is ``output__0``; a tuple or list gives ``output__0``, ``output__1``...; a dict
    gives its keys; nested structures join the parts with ``__`` (``output__1__0``,
    ``logits__0``). Leaves are tensors or plain Python numbers.
    """
    if isinstance(value, dict):
        named: list[tuple[str, Any]] = []
        for key, item in value.items():
            part = str(key) if prefix is None else f"{prefix}__{key}"
            named.extend(_leaves(item, part))
        return named
    if prefix is None and not isinstance(value, (list, tuple)):
        return [(SINGLE_OUTPUT, value)]
    return _leaves(value, prefix or OUTPUT_PREFIX)


def _leaves(value: Any, name: str) -> list[tuple[str, Any]]:
    if isinstance(value, (list, tuple)):
        named: list[tuple[str, Any]] = []
        for i, item in enumerate(value):
            named.extend(_leaves(item, f"{name}__{i}"))
        return named
    if isinstance(value, dict):
        return name_outputs(value, name)
    return [(name, value)]


class LearntSignature:
    """Input and output specs of one model version, learnt from successful requests."""

    def __init__(self) -> None:
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: list[TensorSpec] = []

    def record(self, names: Sequence[str], inputs: Sequence[torch.Tensor], output: Any) -> None:
        """Widen the specs with one request's inputs and its output (cheap; never raises)."""
        for name, tensor in zip(names, inputs):
            spec = self.inputs.get(name)
            if spec is None or not spec.covers(tensor):
                self.inputs[name] = _widen(spec, name, tensor)
        if isinstance(output, torch.Tensor):  # the common case, without building names
            leaves: list[tuple[str, Any]] = [(SINGLE_OUTPUT, output)]
        else:
            leaves = [(n, v) for n, v in name_outputs(output) if isinstance(v, torch.Tensor)]
        outputs = self.outputs
        if len(outputs) != len(leaves) or any(s.name != n for s, (n, _) in zip(outputs, leaves)):
            self.outputs = [TensorSpec(n, v.dtype, tuple(v.shape)) for n, v in leaves]
            return
        for i, (spec, (_, value)) in enumerate(zip(outputs, leaves)):
            if not spec.covers(value):
                outputs[i] = _widen(spec, spec.name, value)


def _widen(spec: TensorSpec | None, name: str, tensor: torch.Tensor) -> TensorSpec:
    if spec is None:
        return TensorSpec(name, tensor.dtype, tuple(tensor.shape))
    return spec.merge(tensor.dtype, tuple(tensor.shape))
