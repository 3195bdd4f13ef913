"""The tutorial's models, shipped as built-in examples (and the default ``classifier``)."""

from __future__ import annotations

import torch
from torch import nn


class Classification(nn.Module):
    """The tutorial's classifier: Linear 320 -> 160 -> 2 with a sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.linear1 = nn.Linear(320, 160)
        self.linear2 = nn.Linear(160, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear2(self.linear1(x)))


class InputConfirm(nn.Module):
    """Data-dependent control flow: tracing silently freezes one branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x
        return -x


def scripted_classifier(seed: int = 0) -> torch.jit.ScriptModule:
    """The default example model, with fixed weights."""
    torch.manual_seed(seed)
    return torch.jit.script(Classification().eval())
