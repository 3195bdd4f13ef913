"""Batch-safety probe: does each sample's output depend only on that sample?

The tutorial's ``InputConfirm`` (``if x.sum() > 0``) sums over the whole batch, so batching
it with other users' requests changes their answers. Before a model's requests are
combined, compare batched outputs with per-sample outputs on varied inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from app.errors import exception_line
from app.serving.runtime import SplitError, collate, split

Forward = Callable[[list[torch.Tensor]], Any]


@dataclass(frozen=True)
class BatchSafety:
    safe: bool
    reason: str


def variants(template: list[torch.Tensor], count: int, seed: int = 0) -> list[list[torch.Tensor]]:
    """``count`` one-sample inputs shaped like ``template``'s rows, of varied sign and scale."""
    gen = torch.Generator().manual_seed(seed)
    samples: list[list[torch.Tensor]] = []
    for i in range(count):
        sample = []
        for t in template:
            row = t[:1].detach().cpu()
            sample.append(_vary(row, i, gen))
        samples.append(sample)
    return samples


def _vary(row: torch.Tensor, i: int, gen: torch.Generator) -> torch.Tensor:
    if row.dtype == torch.bool:
        return row.clone() if i == 0 else torch.rand(row.shape, generator=gen) > 0.5
    if not row.dtype.is_floating_point:
        lo, hi = int(row.min()), int(row.max())
        if i == 0 or lo == hi:
            return row.clone()
        return torch.randint(lo, hi + 1, row.shape, generator=gen, dtype=row.dtype)
    base = row.float()
    noise = torch.randn(row.shape, generator=gen)
    scale = float(base.abs().max()) or 1.0
    options = [
        base,
        -base,
        base * 10 + noise * scale,
        -(noise.abs() * scale * 3),
        noise.abs() * scale * 0.1,
        noise * scale,
    ]
    return options[i % len(options)].to(row.dtype)


def _close(a: Any, b: Any) -> tuple[bool, float]:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False, float("inf")
        if not a.is_floating_point():
            return bool(torch.equal(a, b)), 0.0 if torch.equal(a, b) else float("inf")
        a64, b64 = a.detach().double(), b.detach().double()
        if a64.numel() == 0:
            return True, 0.0
        diff = float((a64 - b64).abs().max())
        tol = 1e-4 + 1e-3 * float(b64.abs().max())
        same_nan = bool(torch.equal(a64.isnan(), b64.isnan()))
        diff = 0.0 if diff != diff and same_nan else diff
        return diff <= tol, diff
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        results = [_close(x, y) for x, y in zip(a, b)]
        return all(ok for ok, _ in results), max((d for _, d in results), default=0.0)
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        results = [_close(a[k], b[k]) for k in a]
        return all(ok for ok, _ in results), max((d for _, d in results), default=0.0)
    return a == b, 0.0 if a == b else float("inf")


def check_batch_safety(forward: Forward, template: list[torch.Tensor], samples: int = 6) -> BatchSafety:
    """Compare batched and per-sample outputs; unsafe on any difference or failure."""
    inputs = variants(template, samples)
    try:
        singles = [forward(s) for s in inputs]
    except Exception as exc:  # the model rejects our synthetic samples: do not risk batching
        reason = f"the check could not run single samples: {exception_line(exc, 200)}"
        return BatchSafety(False, reason)
    for subset in (list(range(samples)), [1, 0], [3, 4, 2]):
        try:
            batched = forward(collate([inputs[i] for i in subset]))
            parts = split(batched, [1] * len(subset))
        except SplitError as exc:
            return BatchSafety(False, f"outputs have no per-sample batch dimension ({exc})")
        except Exception as exc:
            reason = f"model fails on a batch of {len(subset)}: {exception_line(exc, 200)}"
            return BatchSafety(False, reason)
        for pos, i in enumerate(subset):
            ok, diff = _close(parts[pos], singles[i])
            if not ok:
                return BatchSafety(
                    False,
                    f"a sample's output changed by {diff:.3g} when batched with "
                    f"{len(subset) - 1} other samples: outputs depend on other samples in the "
                    "batch (e.g. a reduction over the batch dimension)",
                )
    return BatchSafety(True, f"batched outputs equal per-sample outputs on {samples} probes")
