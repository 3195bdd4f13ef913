"""Eager -> ``torch.export`` (ExportedProgram ``.pt2``) or AOTInductor package, checked like scripts.

``method=export`` exports with a dynamic batch dimension (``Dim("batch")`` on dim 0 of every
input), so the server can batch requests; ``format=aoti`` compiles that program with
AOTInductor to a native library (needs a C++ compiler; a minute or more on two cores).
Each result is compared with the eager model on the same probes as a script or trace, saved,
loaded back the way the server loads it, and compared again.

The tutorial's lesson: ``InputConfirm``'s ``if x.sum() > 0`` cannot be exported, because
``torch.export`` records one graph for every input; the failure is explained with the source
line and the two ways out (``torch.cond``, ``method=script``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from app.compiler.checks import Probe, compare_all, run
from app.compiler.report import CheckResult, CompileReport, Redactor, explain, user_frame
from app.compiler.spec import CompileFailure
from app.errors import exception_line

_CALL_SITE = re.compile(r'File "([^"]+)", line (\d+), in \w+\n\s+(.+)')
_DATA_DEPENDENT = ("GuardOnDataDependentSymNode", "data-dependent", "Dynamic control flow is not supported")


def batch_examples(examples: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The examples with at least two rows: torch.export specializes a dimension of size 1."""
    if any(x.dim() == 0 for x in examples) or any(x.shape[0] != examples[0].shape[0] for x in examples):
        return examples
    return tuple(torch.cat([x, x]) if x.shape[0] == 1 else x for x in examples)


def export_model(model: torch.nn.Module, examples: tuple[torch.Tensor, ...], report: CompileReport,
                 redact: Redactor, user_files: set[str]) -> tuple[Any, bool]:
    """``torch.export.export`` with a dynamic batch dimension, or static if the model fixes it.

    Returns the program and whether its batch dimension is dynamic.
    """
    widened = batch_examples(examples)
    batchable = widened is not examples or all(x.dim() > 0 for x in examples)
    dynamic = tuple({0: torch.export.Dim("batch")} for _ in widened) if batchable else None
    try:
        program = torch.export.export(model, widened, dynamic_shapes=dynamic)
        report.why = ("method=export: torch.export with a dynamic batch dimension (Dim 'batch' on "
                      "dim 0 of every input): requests are batched")
        return program, True
    except Exception as exc:
        if _is_data_dependent(exc):
            message = data_dependent_message(exc, redact, user_files)
            raise CompileFailure("export_data_dependent", message) from None
        if dynamic is None:
            raise _export_failure(exc, redact, user_files) from None
        first = redact(exception_line(exc, 300))
    try:  # the model fixes its batch size (a reshape to a constant, ...): export it static
        program = torch.export.export(model, examples)
    except Exception as exc:
        if _is_data_dependent(exc):
            message = data_dependent_message(exc, redact, user_files)
            raise CompileFailure("export_data_dependent", message) from None
        raise _export_failure(exc, redact, user_files) from None
    report.why = "method=export: torch.export with static shapes (the batch dimension could not be dynamic)"
    report.warnings.append(
        f"the batch dimension could not be exported as dynamic ({first}); the program takes exactly "
        f"{examples[0].shape[0] if examples and examples[0].dim() else 'the example'} rows and is "
        "served unbatched")
    return program, False


def _is_data_dependent(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _DATA_DEPENDENT)


def data_dependent_message(exc: BaseException, redact: Redactor, user_files: set[str]) -> str:
    """The 422 for a branch on a tensor's value, in plain words, with the source line."""
    where = ""
    sites = _CALL_SITE.findall(str(exc))
    chosen = [s for s in sites if s[0] in user_files] or sites
    if chosen:
        file, line, code = chosen[-1]
        where = f" at {redact(file)} line {line}: `{code.strip()}`"
    else:
        frame = user_frame(exc, user_files)
        if frame is not None:
            where = f" at {redact(frame.filename)} line {frame.lineno}: `{(frame.line or '').strip()}`"
    first = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return (
        f"torch.export cannot export this model: it branches on the values of a tensor{where}. "
        "torch.export records one graph that must hold for every input, so a Python `if` on data "
        "(here: which way the branch goes depends on the numbers in the request) has no single "
        "answer to record; this is a guard on a data-dependent value. Either rewrite the branch "
        "with torch.cond(pred, true_fn, false_fn, (x,)), which exports both sides, or upload with "
        f"method=script, which compiles the `if` to TorchScript. (torch: {type(exc).__name__}: "
        f"{first[:300]})"
    )


def _export_failure(exc: BaseException, redact: Redactor, user_files: set[str]) -> CompileFailure:
    message = explain(exc, "torch.export could not export the model", user_files)
    return CompileFailure("export_failed", redact(message) + "\nTry method=script or method=trace.")


def save_exported(program: Any, output: Path, workdir: Path) -> None:
    """``torch.export.save`` to ``output`` (written as ``.pt2`` first, as torch expects)."""
    staged = workdir / "exported.pt2"
    torch.export.save(program, str(staged))
    os.replace(staged, output)


def compile_aoti(program: Any, output: Path, workdir: Path) -> None:
    """AOTInductor: compile ``program`` to a native library packaged at ``output``."""
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = 1  # no worker pool inside the limited compile process
    staged = workdir / "aoti.pt2"
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(staged))
    except Exception as exc:
        compiler = "a C++ compiler" if "compiler" in str(exc).lower() or "g++" in str(exc) else "AOTInductor"
        raise CompileFailure("aoti_failed", f"AOTInductor could not compile the exported program "
                             f"({compiler} failed): {exception_line(exc, 600)}") from None
    os.replace(staged, output)


def reload_and_compare(output: Path, kind: str, probes: list[Probe], expected: list[Any],
                       redact: Redactor) -> list[CheckResult]:
    """Load ``output`` the way the server does and compare it on every probe."""
    from app.serving.exported import AOTIModel, ExportedModel

    loaded = (ExportedModel.load(output, "cpu") if kind == "exported_program"
              else AOTIModel.load(output, "cpu"))

    def call(*inputs: torch.Tensor) -> Any:
        return loaded.forward(list(inputs))

    return compare_all(call, probes, expected, redact)


def expected_outputs(module: Any, probes: list[Probe], redact: Redactor) -> list[Any]:
    return [run(module, p, redact) for p in probes]
