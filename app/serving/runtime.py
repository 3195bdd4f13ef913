"""A loaded model on its device (the interface; TorchScript here): signature, collate / forward / split.

``LoadedModel`` is what the registry, batcher and routes use: ``signature``, ``forward``,
``parameter_bytes``, ``code`` (what will run), ``graph_findings`` (the op policy on the loaded
graph), ``batch`` (what dim 0 allows) and ``format``. ``app.serving.exported`` implements it for
ExportedPrograms and AOTInductor packages; ``load_model`` picks the implementation from the
archive's contents.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.errors import BadRequestError, ModelLoadError, exception_line

log = logging.getLogger(__name__)

# torch >= 2.10 warns on every torch.jit call; TorchScript is what we serve, so it is noise here.
warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=DeprecationWarning)

load_lock = threading.Lock()  # torch's loaders are not documented thread-safe


@dataclass(frozen=True)
class BatchDim:
    """What a program allows along dim 0: at most ``max_rows`` (None: any), or why it cannot batch."""

    max_rows: int | None = None
    unbatchable: str | None = None
    note: str = ""


@dataclass(frozen=True)
class ArgSpec:
    """One argument of ``forward`` as the TorchScript schema declares it."""

    name: str
    type: str
    has_default: bool

    @property
    def is_tensor(self) -> bool:
        return self.type in {"Tensor", "Optional[Tensor]"}


@dataclass(frozen=True)
class Signature:
    """What ``forward`` takes and returns."""

    args: tuple[ArgSpec, ...]
    returns: str

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.args]

    @property
    def required(self) -> int:
        return sum(1 for a in self.args if not a.has_default)

    @property
    def tensors_only(self) -> bool:
        return all(a.is_tensor for a in self.args)

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": [
                {"name": a.name, "type": a.type, "optional": a.has_default} for a in self.args
            ],
            "returns": self.returns,
        }


def resolve_device(requested: str | None, default: str) -> str:
    """Turn ``auto`` / ``cuda`` / ``cuda:N`` / ``cpu`` into a concrete, available device."""
    value = (requested or default or "auto").strip().lower()
    if value == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return "cpu"
    if value == "cuda":
        value = "cuda:0"
    if value.startswith("cuda:") and value[5:].isdigit():
        index = int(value[5:])
        if not torch.cuda.is_available():
            raise BadRequestError(f"device {value!r} requested, but CUDA is not available here")
        if index >= torch.cuda.device_count():
            raise BadRequestError(
                f"device {value!r} requested, but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
        return value
    raise BadRequestError(f"unknown device {value!r}: use auto, cpu, cuda or cuda:N")


def signature_of(module: torch.jit.ScriptModule) -> Signature:
    """Read ``forward``'s argument names and types from its TorchScript schema."""
    schema = module.forward.schema  # type: ignore[attr-defined]  # a ScriptMethod
    args = tuple(
        ArgSpec(a.name, str(a.type), a.has_default_value()) for a in schema.arguments[1:]
    )
    returns = ", ".join(str(r.type) for r in schema.returns)
    return Signature(args, returns)


def floating_dtype(module: torch.nn.Module | torch.jit.ScriptModule) -> torch.dtype | None:
    """The one floating dtype of the module's parameters and buffers, or None (none, or mixed)."""
    found = {t.dtype for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()}
    return found.pop() if len(found) == 1 else None


class LoadedModel:
    """A ScriptModule in eval mode on one device."""

    format = "torchscript"
    batch = BatchDim()  # TorchScript declares no batch limit: the batch-safety probe decides
    floating_dtype: torch.dtype | None = None  # the parameters' one floating dtype, if known

    def __init__(self, module: torch.jit.ScriptModule, device: str) -> None:
        self.module = module
        self.device = torch.device(device)
        self.signature = signature_of(module)
        self.on_cuda = self.device.type == "cuda"
        self.floating_dtype = floating_dtype(module)

    @classmethod
    def load(cls, path: Path, device: str) -> LoadedModel:
        """Load an archive onto ``device``; any failure becomes a ModelLoadError."""
        try:
            with load_lock:
                module = torch.jit.load(str(path), map_location=device)
            module.eval()
            return cls(module, device)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"could not load the TorchScript archive: {exception_line(exc)}") from None

    def parameter_bytes(self) -> int:
        """Bytes held by parameters and buffers."""
        total = 0
        for t in list(self.module.parameters()) + list(self.module.buffers()):
            total += t.numel() * t.element_size()
        return total

    def graph_findings(self) -> list[Any]:
        """Uses of refused ops or classes in the loaded graphs (``app.intake.screening``)."""
        from app.intake.screening import check_module

        return check_module(self.module)

    def code(self, view: str) -> dict[str, Any]:
        """What will run, for ``GET /models/{name}/code``."""
        from app.serving.code_view import module_code

        return {**module_code(self.module, view), "format": self.format}  # type: ignore[arg-type]

    def run(self, inputs: list[torch.Tensor], deadline: float | None = None) -> Any:
        """``forward`` for the batcher: ``deadline`` (monotonic) is when its requests give up
        (a hosted model's host is killed a grace period past it; in process it is not used)."""
        return self.forward(inputs)

    def batch_safety(self, template: list[torch.Tensor], deadline: float | None = None) -> Any:
        """Run the batch-safety probe (``app.serving.batch_safety``) on this model."""
        from app.serving.batch_safety import check_batch_safety

        return check_batch_safety(self.forward, template)

    def close(self) -> None:
        """Release what the model holds outside this object (a hosted model: its host)."""

    def forward(self, inputs: list[torch.Tensor]) -> Any:
        """Run one forward pass on host tensors; returns outputs on the host."""
        if self.on_cuda:
            inputs = [
                t.pin_memory().to(self.device, non_blocking=True) if t.device.type == "cpu" else t
                for t in inputs
            ]
        with torch.inference_mode():
            out = self.module(*inputs)
        if self.on_cuda:
            out = to_host(out)
        return out


def to_host(value: Any) -> Any:
    """Copy every tensor in an output structure to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(to_host(v) for v in value) if isinstance(value, list) else tuple(
            to_host(v) for v in value
        )
    if isinstance(value, dict):
        return {k: to_host(v) for k, v in value.items()}
    return value


def batch_rows(inputs: list[torch.Tensor]) -> int | None:
    """Samples in a request: the shared leading dim of every input, or None if not batchable."""
    rows = None
    for t in inputs:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return None
        if rows is None:
            rows = t.shape[0]
        elif t.shape[0] != rows:
            return None
    return rows


def batch_key(inputs: list[torch.Tensor]) -> tuple:
    """Requests with equal keys can be concatenated along dim 0."""
    return tuple((t.dtype, tuple(t.shape[1:])) for t in inputs)


def collate(requests: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Concatenate compatible requests along dim 0."""
    if len(requests) == 1:
        return requests[0]
    return [torch.cat(parts) for parts in zip(*requests)]


class SplitError(ValueError):
    """A batched output cannot be divided back among its requests."""


def split(output: Any, sizes: list[int]) -> list[Any]:
    """Divide a batched output (tensor, tuple/list, dict) into one output per request."""
    total = sum(sizes)
    if isinstance(output, torch.Tensor):
        if output.dim() == 0 or output.shape[0] != total:
            raise SplitError(
                f"output of shape {tuple(output.shape)} has no batch dimension of {total}"
            )
        return list(torch.split(output, sizes))
    if isinstance(output, (list, tuple)):
        columns = [split(v, sizes) for v in output]
        wrap = list if isinstance(output, list) else tuple
        return [wrap(col[i] for col in columns) for i in range(len(sizes))]
    if isinstance(output, dict):
        columns_by_key = {k: split(v, sizes) for k, v in output.items()}
        return [{k: col[i] for k, col in columns_by_key.items()} for i in range(len(sizes))]
    raise SplitError(f"output of type {type(output).__name__} cannot be split into a batch")


def load_model(path: Path, device: str) -> LoadedModel:
    """Load an archive with the runtime its contents call for (TorchScript, ExportedProgram, AOTI)."""
    from app.intake.archive import inspect_zip

    try:
        kind = inspect_zip(path).kind
    except Exception as exc:
        raise ModelLoadError(f"could not read the archive: {exception_line(exc)}") from None
    if kind == "exported_program":
        from app.serving.exported import ExportedModel

        return ExportedModel.load(path, device)
    if kind == "aoti":
        from app.serving.exported import AOTIModel

        return AOTIModel.load(path, device)
    return LoadedModel.load(path, device)
