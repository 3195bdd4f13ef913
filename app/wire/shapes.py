"""What a model version's tensors look like: names, dtypes, shapes.

TorchScript schemas name ``forward``'s arguments but not their dtypes or shapes, and name
no outputs at all. The v2 protocol's model metadata wants both, so each version keeps what
its example inputs (run once at upload) and its successful requests showed, stored with the
version: a dimension that differed between runs becomes -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from app.wire.dtypes import BY_DATATYPE, BY_TORCH

UNKNOWN = "UNKNOWN"  # v2 datatype of a tensor nothing has shown yet
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


def spec_json(spec: TensorSpec) -> dict[str, Any]:
    """A spec as stored and as v2 metadata shows it: ``{"name", "datatype", "shape"}``."""
    known = BY_TORCH.get(spec.dtype)
    return {"name": spec.name, "datatype": known.datatype if known else UNKNOWN,
            "shape": list(spec.shape)}


def spec_from_json(doc: Any) -> TensorSpec | None:
    """The spec of a stored ``{"name", "datatype", "shape"}``, or None if it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        return None
    known = BY_DATATYPE.get(doc.get("datatype"))  # type: ignore[arg-type]
    shape = doc.get("shape")
    if known is None or not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        return None
    return TensorSpec(doc["name"], known.torch, tuple(shape))


def describe(names: Sequence[str], inputs: Sequence[torch.Tensor], output: Any) -> dict[str, Any]:
    """The stored signature of one run (the upload's example inputs and what they returned)."""
    learnt = LearntSignature()
    learnt.record(names, inputs, output)
    return learnt.as_json()


class LearntSignature:
    """Input and output specs of one model version: from its example inputs, then widened by
    every successful request."""

    def __init__(self) -> None:
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: list[TensorSpec] = []

    def seed(self, doc: Any) -> None:
        """Start from a stored signature (``as_json``'s shape); malformed entries are skipped."""
        if not isinstance(doc, dict):
            return
        for item in doc.get("inputs") or []:
            spec = spec_from_json(item)
            if spec is not None:
                self.inputs[spec.name] = spec
        outputs = [spec_from_json(item) for item in doc.get("outputs") or []]
        if outputs and all(o is not None for o in outputs):
            self.outputs = [o for o in outputs if o is not None]

    def as_json(self) -> dict[str, Any]:
        return {"inputs": [spec_json(s) for s in self.inputs.values()],
                "outputs": [spec_json(s) for s in self.outputs]}

    def record(self, names: Sequence[str], inputs: Sequence[torch.Tensor], output: Any) -> bool:
        """Widen the specs with one request's inputs and its output (cheap; never raises).

        True when something changed (worth saving)."""
        changed = False
        for name, tensor in zip(names, inputs):
            spec = self.inputs.get(name)
            if spec is None or not spec.covers(tensor):
                self.inputs[name] = _widen(spec, name, tensor)
                changed = True
        if isinstance(output, torch.Tensor):  # the common case, without building names
            leaves: list[tuple[str, Any]] = [(SINGLE_OUTPUT, output)]
        else:
            leaves = [(n, v) for n, v in name_outputs(output) if isinstance(v, torch.Tensor)]
        outputs = self.outputs
        if len(outputs) != len(leaves) or any(s.name != n for s, (n, _) in zip(outputs, leaves)):
            self.outputs = [TensorSpec(n, v.dtype, tuple(v.shape)) for n, v in leaves]
            return True
        for i, (spec, (_, value)) in enumerate(zip(outputs, leaves)):
            if not spec.covers(value):
                outputs[i] = _widen(spec, spec.name, value)
                changed = True
        return changed


def _widen(spec: TensorSpec | None, name: str, tensor: torch.Tensor) -> TensorSpec:
    if spec is None:
        return TensorSpec(name, tensor.dtype, tuple(tensor.shape))
    return spec.merge(tensor.dtype, tuple(tensor.shape))
