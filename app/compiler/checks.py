"""Inputs that take other paths, and comparisons of a compiled module with the eager one.

A trace records one path through ``forward``. The probes vary what could change the path:
signs (negated, all positive, all negative), scales (x1000, x0.001), fresh random values,
and another batch size. Each compiled, reloaded or optimized module is compared with its
reference on every probe.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from app.compiler.report import CheckResult, Redactor, TracerNote
from app.compiler.spec import CompileFailure
from app.errors import exception_line
from app.wire.dtypes import BY_NAME

ATOL, RTOL = 1e-5, 1e-4  # compiled vs eager: same kernels, same order; near bit-exact
HALF_ATOL, HALF_RTOL = 1e-2, 1e-2  # float16 / bfloat16 outputs
OPTIMIZED_ATOL, OPTIMIZED_RTOL = 1e-4, 1e-3  # freeze + fusion may reorder float sums


@dataclass
class Probe:
    """A named set of positional inputs."""

    name: str
    args: tuple[torch.Tensor, ...]

    def fresh(self) -> tuple[torch.Tensor, ...]:
        return tuple(a.clone() for a in self.args)  # a model may modify its inputs in place


@dataclass
class Outcome:
    """A module's output on one probe, or the error it raised."""

    value: Any = None
    error: str | None = None


def example_tensors(examples: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
    """Tensors for the ``example_inputs`` spec (generated values use a fixed seed)."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for i, ex in enumerate(examples):
        known = BY_NAME.get(ex.get("dtype", ""))
        dtype = known.torch if known else None
        if "data" in ex:
            try:
                t = torch.tensor(ex["data"], dtype=dtype)
                if "shape" in ex:
                    t = t.reshape(ex["shape"])
            except (TypeError, ValueError, RuntimeError) as exc:
                raise CompileFailure("bad_examples", f"example_inputs[{i}]: {exc}") from None
        else:
            t = _random(ex["shape"], dtype or torch.float32, gen, ex.get("low"), ex.get("high"))
        out.append(t)
    return tuple(out)


def _random(shape: list[int], dtype: torch.dtype, gen: torch.Generator,
            low: float | None = None, high: float | None = None) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if not dtype.is_floating_point:
        lo = int(low) if low is not None else 0
        return torch.randint(lo, max(int(high) if high is not None else 2, lo + 1), shape,
                             generator=gen, dtype=dtype)
    if low is not None or high is not None:
        bottom, top = float(low if low is not None else 0.0), float(high if high is not None else 1.0)
        return (torch.rand(shape, generator=gen) * (top - bottom) + bottom).to(dtype)
    return torch.randn(shape, generator=gen).to(dtype)


def probes(examples: tuple[torch.Tensor, ...]) -> list[Probe]:
    """The examples and variants built to take other paths through data-dependent code."""
    gen = torch.Generator().manual_seed(1)

    def each(fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(fn(x) if x.is_floating_point() else x for x in examples)

    def random_like(x: torch.Tensor, shape: list[int] | None = None) -> torch.Tensor:
        shape = list(x.shape) if shape is None else shape
        if x.is_floating_point() or x.dtype == torch.bool:
            return _random(shape, x.dtype, gen)
        lo, hi = (int(x.min()), int(x.max()) + 1) if x.numel() else (0, 2)
        return _random(shape, x.dtype, gen, lo, hi)

    out = [Probe("example", examples)]
    if any(x.is_floating_point() for x in examples):
        out += [
            Probe("negated example (-x)", each(lambda x: -x)),
            Probe("example x 1000", each(lambda x: x * 1000)),
            Probe("example x 0.001", each(lambda x: x * 0.001)),
            Probe("random normal values", tuple(random_like(x) for x in examples)),
            Probe("random positive values", each(lambda x: random_like(x).abs() + 0.01)),
            Probe("random negative values", each(lambda x: -random_like(x).abs() - 0.01)),
        ]
    elif any(x.dtype == torch.bool for x in examples):
        out.append(Probe("negated example (not x)",
                         tuple(~x if x.dtype == torch.bool else x for x in examples)))
    if not any(x.is_floating_point() for x in examples):
        out.append(Probe("random values", tuple(random_like(x) for x in examples)))
    sizes = {x.shape[0] for x in examples if x.dim() > 0}
    if len(sizes) == 1 and all(x.dim() > 0 for x in examples):
        n = sizes.pop()
        other = n + 2 if n <= 2 else n - 1
        out.append(Probe(f"batch size {other} (random values)",
                         tuple(random_like(x, [other, *x.shape[1:]]) for x in examples)))
    return out


def run(module: Callable[..., Any], probe: Probe, redact: Redactor) -> Outcome:
    """The module's output on ``probe``, or the (redacted) error it raised."""
    try:
        with torch.no_grad():
            return Outcome(module(*probe.fresh()))
    except Exception as exc:
        return Outcome(error=redact(f"{type(exc).__name__}: {exception_line(exc)}")[:300])


def compare_all(module: Callable[..., Any], probes_: list[Probe], reference: list[Outcome],
                redact: Redactor, atol: float = ATOL, rtol: float = RTOL) -> list[CheckResult]:
    """Compare ``module`` with the reference outcomes on every probe."""
    results = []
    for probe, ref in zip(probes_, reference):
        if ref.error is not None:
            results.append(CheckResult(probe.name, None, True, f"skipped: the reference raised {ref.error}"))
            continue
        got = run(module, probe, redact)
        if got.error is not None:
            results.append(CheckResult(probe.name, None, False, f"raised {got.error}"))
            continue
        diff, note = compare(ref.value, got.value, atol, rtol)
        results.append(CheckResult(probe.name, diff, note is None, note))
    return results


def _flatten(value: Any, path: str = "output") -> Iterator[tuple[str, Any]]:
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _flatten(value[key], f"{path}[{key!r}]")
    else:
        yield path, value


def compare(expected: Any, got: Any, atol: float, rtol: float) -> tuple[float, str | None]:
    """Max abs difference over all output tensors, and why they do not match (None if they do)."""
    a, b = list(_flatten(expected)), list(_flatten(got))
    if [p for p, _ in a] != [p for p, _ in b]:
        return float("inf"), "the output structure differs"
    worst, problem = 0.0, None
    for (path, x), (_, y) in zip(a, b):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            if x != y:
                return float("inf"), f"{path} differs: {str(x)[:40]} vs {str(y)[:40]}"
            continue
        if x.shape != y.shape:
            return float("inf"), f"{path} has shape {list(y.shape)} instead of {list(x.shape)}"
        diff, ok = _tensor_diff(x, y, atol, rtol)
        worst = max(worst, diff)
        if not ok and problem is None:
            problem = f"at {path}"
    return worst, problem


def _tensor_diff(x: torch.Tensor, y: torch.Tensor, atol: float, rtol: float) -> tuple[float, bool]:
    if x.numel() == 0:
        return 0.0, True
    if not (x.is_floating_point() or x.is_complex()) or not (y.is_floating_point() or y.is_complex()):
        d = (x.to(torch.float64) - y.to(torch.float64)).abs()
        return float(d.max()), bool((d == 0).all())
    if torch.float16 in (x.dtype, y.dtype) or torch.bfloat16 in (x.dtype, y.dtype):
        atol, rtol = max(atol, HALF_ATOL), max(rtol, HALF_RTOL)
    xd, yd = x.detach().to(torch.float64), y.detach().to(torch.float64)
    d = (xd - yd).abs()
    d = torch.where((xd == yd) | (xd.isnan() & yd.isnan()), torch.zeros_like(d), d)
    d = torch.where(d.isnan(), torch.full_like(d, float("inf")), d)
    ok = bool((d <= atol + rtol * xd.abs().nan_to_num(posinf=0.0, neginf=0.0)).all())
    return float(d.max()), ok


def trace(model: nn.Module, examples: tuple[torch.Tensor, ...],
          redact: Redactor) -> tuple[torch.jit.ScriptModule, list[TracerNote]]:
    """``torch.jit.trace`` with every TracerWarning captured, with its source line."""
    import linecache

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, tuple(a.clone() for a in examples), check_trace=False)
    notes: list[TracerNote] = []
    seen = set()
    for w in caught:
        if not issubclass(w.category, torch.jit.TracerWarning):
            continue
        key = (w.filename, w.lineno)
        if key in seen:
            continue
        seen.add(key)
        message = str(w.message).split(". ")[0].strip().rstrip(".")
        code = linecache.getline(w.filename, w.lineno).strip()
        notes.append(TracerNote(redact(message)[:300], redact(w.filename), w.lineno, code[:200]))
    return traced, notes
