"""Named fake models, built at test time into a temp folder (no committed binaries)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from app.examples import Classification, InputConfirm


class AddScaled(nn.Module):
    """Two inputs, one optional scale: x + alpha * y."""

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                alpha: torch.Tensor | None = None) -> torch.Tensor:
        if alpha is None:
            return x + y
        return x + alpha * y


class TupleOut(nn.Module):
    """Returns a tuple: (x * 2, x.sum(dim=1))."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum(dim=1)


class DictOut(nn.Module):
    """Returns a dict of tensors."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2, "neg": -x}


class FailsOnNegative(nn.Module):
    """Raises for any sample holding a negative value: a model error caused by the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("negative values are not allowed")
        return x + 1


class Embed(nn.Module):
    """Integer input (token ids) -> embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)


class WithHelper(nn.Module):
    """Has an extra exported method besides forward."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    @torch.jit.export
    def describe(self) -> str:
        return "linear 4->2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class BatchMean(nn.Module):
    """Subtracts the batch mean: output depends on the other samples."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=0, keepdim=True)


class SlowClassifier(nn.Module):
    """The tutorial's classifier after a CPU-bound spin (holds requests in flight): 20,000
    256x256 products by default, about 20 s on one core of the 2-core CI machine."""

    def __init__(self, iterations: int = 20_000) -> None:
        super().__init__()
        self.inner = Classification()
        self.iterations = iterations
        self.register_buffer("spin", torch.eye(256) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = self.spin
        for _ in range(self.iterations):
            acc = torch.mm(acc, self.spin)
        return self.inner(x) + 0.0 * acc[0, 0]


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "classifier": Classification,
    "input_confirm": InputConfirm,
    "add_scaled": AddScaled,
    "tuple_out": TupleOut,
    "dict_out": DictOut,
    "fails_on_negative": FailsOnNegative,
    "embed": Embed,
    "with_helper": WithHelper,
    "batch_mean": BatchMean,
    "slow_classifier": SlowClassifier,
    "held_classifier": lambda: SlowClassifier(iterations=4_000),  # about 4 s on one core
}


def build(name: str, seed: int = 0) -> torch.jit.ScriptModule:
    torch.manual_seed(seed)
    return torch.jit.script(BUILDERS[name]().eval())


def save(name: str, folder: Path, seed: int = 0) -> Path:
    """Script the named model and save it as ``folder/<name>-<seed>.torchscript``."""
    path = folder / f"{name}-{seed}.torchscript"
    build(name, seed).save(str(path))
    return path
