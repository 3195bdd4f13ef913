"""Models that misbehave on request, built at test time: loop forever or allocate without
bound when an input says so, and answer ``x + 1`` otherwise."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class LoopsOnNegative(nn.Module):
    """``x + 1``; a forward whose input sums below minus a million never returns (the
    batch-safety probe's samples stay far above it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        while bool(x.sum() < -1e6):
            i = i + 1
        return x + 1


class AllocatesOnHuge(nn.Module):
    """``x + 1``; an input summing above a million asks for 256 GiB."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 1e6):
            return x + torch.ones([68719476736]).sum()
        return x + 1


def save(module: nn.Module, folder: Path) -> Path:
    path = folder / f"{type(module).__name__}.torchscript"
    torch.jit.script(module).save(str(path))
    return path


def spin_setstate(folder: Path, name: str = "spin.pt", randomly: bool = False) -> Path:
    """An archive whose ``__setstate__`` loops forever at load (on half the draws if ``randomly``)."""
    from tests.support import hostile

    condition = "bool(torch.lt(torch.rand([1]), 0.5))" if randomly else "True"
    body = (f"    if {condition}:\n"
            "      i = 0\n      while torch.lt(i, 1000000000000):\n        i = torch.add(i, 0)\n")
    return hostile.edit(hostile.base_archive(folder), folder / name, hostile.with_setstate(body),
                        data_pkl=hostile.SETSTATE_PKL)


def alloc_setstate(folder: Path, name: str = "alloc.pt") -> Path:
    """An archive whose ``__setstate__`` allocates 4 GiB at load (and touches it)."""
    from tests.support import hostile

    body = "    _0 = torch.ones([1073741824])\n    state = bool(torch.gt(torch.sum(_0), 0.))\n"
    return hostile.edit(hostile.base_archive(folder), folder / name, hostile.with_setstate(body),
                        data_pkl=hostile.SETSTATE_PKL)
