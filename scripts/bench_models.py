"""Reference models for scripts/bench.py (same shapes as ../shared/bench/models.py)."""

from __future__ import annotations

import torch
from torch import nn

from app.examples import Classification, InputConfirm


class DeepMLP(nn.Module):
    """Compute-heavy: about 13M multiply-adds per sample; batching pays off."""

    def __init__(self, width: int = 2048, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(256, width), nn.ReLU()]
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.ReLU()]
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


MODELS = {"seed_mlp": (Classification, 320), "deep_mlp": (DeepMLP, 256), "input_confirm": (InputConfirm, 8)}


def build(name: str) -> tuple[torch.jit.ScriptModule, int]:
    """The scripted model (seed 0) and its feature count."""
    cls, features = MODELS[name]
    torch.manual_seed(0)
    return torch.jit.script(cls().eval()), features
