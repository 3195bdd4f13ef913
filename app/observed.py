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


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor as seen so far; -1 marks a dimension that varied."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

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
        return [(f"{OUTPUT_PREFIX}__0", value)]
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


class ObservedSignature:
    """Input and output specs of one model version, learnt from successful requests."""

    def __init__(self) -> None:
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: list[TensorSpec] = []
        self.requests = 0

    def record(self, names: Sequence[str], inputs: Sequence[torch.Tensor], output: Any) -> None:
        """Widen the specs with one request's inputs and its output (cheap; never raises)."""
        self.requests += 1
        for name, tensor in zip(names, inputs):
            self.inputs[name] = self._merge(self.inputs.get(name), name, tensor)
        leaves = [(n, v) for n, v in name_outputs(output) if isinstance(v, torch.Tensor)]
        if [s.name for s in self.outputs] != [n for n, _ in leaves]:
            self.outputs = [TensorSpec(n, v.dtype, tuple(v.shape)) for n, v in leaves]
            return
        self.outputs = [self._merge(s, s.name, v) for s, (_, v) in zip(self.outputs, leaves)]

    @staticmethod
    def _merge(spec: TensorSpec | None, name: str, tensor: torch.Tensor) -> TensorSpec:
        shape = tuple(tensor.shape)
        if spec is None:
            return TensorSpec(name, tensor.dtype, shape)
        if spec.dtype == tensor.dtype and spec.shape == shape:
            return spec
        return spec.merge(tensor.dtype, shape)
