"""The pipeline: build the eager model, script / trace / auto, check, optimize, save, reload.

Runs inside the isolated compile process (``task``) or in the offline CLI; never in the
server process, because building the model runs the user's code.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from app.compiler.build import eager_model, run_user_forward
from app.compiler.checks import (
    OPTIMIZED_ATOL,
    OPTIMIZED_RTOL,
    Outcome,
    Probe,
    compare_all,
    example_tensors,
    probes,
    run,
    trace,
)
from app.compiler.export import compile_aoti, export_model, reload_and_compare, save_exported
from app.compiler.report import CheckResult, CompileReport, Redactor, divergence_message, explain
from app.compiler.spec import CompileFailure, CompileSpec, describe_examples
from app.errors import exception_line


def quiet_jit_deprecation() -> None:
    """torch >= 2.10 warns on every torch.jit call; that is noise here (see DESIGN.md)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"`?torch\.jit\.")


def compile_eager(spec: CompileSpec, workdir: Path, output: Path, redact: Redactor) -> dict:
    """Compile ``spec`` to a verified TorchScript archive at ``output``; return the report.

    Raises CompileFailure, its message passed through ``redact`` (no server paths).
    """
    try:
        return _compile_eager(spec, workdir, output, redact)
    except CompileFailure as exc:
        raise CompileFailure(exc.reason, redact(exc.message)) from None


def _compile_eager(spec: CompileSpec, workdir: Path, output: Path, redact: Redactor) -> dict:
    started = time.monotonic()
    quiet_jit_deprecation()
    torch.manual_seed(0)  # architectures without weights get reproducible parameters
    user_files = {str(workdir / spec.source_path)} if spec.source_path else set()
    report = CompileReport(
        form=spec.form,
        method_requested=spec.method,
        model=spec.describe(),
        examples=describe_examples(spec.examples),
        torch_version=torch.__version__,
    )
    model, report.weights = eager_model(spec, workdir)
    examples = example_tensors(spec.examples)
    probe_list = probes(examples)
    first = run_user_forward(model, probe_list[0].fresh(), "the eager model failed on the example inputs",
                             user_files)
    eager = [Outcome(first)] + [run(model, p, redact) for p in probe_list[1:]]
    if spec.method == "export":
        _compile_exported(model, spec, examples, probe_list, eager, report, redact, user_files, output)
        report.seconds = time.monotonic() - started
        return report.as_dict()

    compiled = _compile(model, spec, examples, report, redact, user_files)
    checks = compare_all(compiled, probe_list, eager, redact)
    report.checks["compiled_vs_eager"] = checks
    _judge(checks, report, spec, len(probe_list))

    expected = [run(compiled, p, redact) for p in probe_list]
    final, expected = _optimize(compiled, probe_list, expected, report, redact) if spec.optimize else (
        compiled, expected)

    final.save(str(output))
    reloaded = torch.jit.load(str(output), map_location="cpu")
    round_trip = compare_all(reloaded, probe_list, expected, redact)
    report.checks["reloaded_vs_compiled"] = round_trip
    bad = [c for c in round_trip if not c.ok]
    if bad:
        raise CompileFailure(
            "round_trip_failed",
            f"the saved archive, loaded back, does not match the compiled module on '{bad[0].input}' "
            f"({bad[0].note or f'max abs diff {bad[0].max_abs_diff:.4g}'}); nothing was stored",
        )
    report.seconds = time.monotonic() - started
    return report.as_dict()


def _compile(model: torch.nn.Module, spec: CompileSpec, examples: tuple[torch.Tensor, ...],
             report: CompileReport, redact: Redactor, user_files: set[str]) -> torch.jit.ScriptModule:
    if spec.method in ("script", "auto"):
        try:
            scripted = torch.jit.script(model)
        except Exception as exc:
            message = redact(f"torch.jit.script could not compile the model: {str(exc).strip()}")
            if spec.method == "script":
                raise CompileFailure(
                    "script_failed",
                    message + "\nMake that code TorchScript-compatible, or use method=trace (the "
                    "trace is checked against the eager model).",
                ) from None
            report.script_error = message
        else:
            report.method = "script"
            report.why = (
                "method=script: torch.jit.script compiled forward, control flow included"
                if spec.method == "script" else
                "auto: torch.jit.script succeeded, so data-dependent control flow is compiled, "
                "not frozen by a trace"
            )
            return scripted
    try:
        traced, notes = trace(model, examples, redact)
    except Exception as exc:
        message = explain(exc, "torch.jit.trace failed", user_files)
        raise CompileFailure("trace_failed", redact(message)) from None
    report.method = "trace"
    report.tracer_warnings = notes
    if spec.method == "trace":
        report.why = "method=trace: traced with the example inputs, then checked against the eager model"
    else:
        first = (report.script_error or "").split("\n")[0].removeprefix(
            "torch.jit.script could not compile the model: ")
        report.why = (f"auto: torch.jit.script failed ({first[:300]}); fell back to torch.jit.trace, "
                      "checked against the eager model")
    return traced


def _judge(checks: list[CheckResult], report: CompileReport, spec: CompileSpec, probes_: int) -> None:
    """Refuse a compiled module that differs from the eager one (unless a trace is accepted)."""
    failures = [c for c in checks if not c.ok]
    if failures:
        message = divergence_message(report.method, failures, report.tracer_warnings, probes_)
        if report.method == "trace" and spec.accept_divergent_trace:
            report.accepted_divergence = True
            report.warnings.append("served a trace that diverges from the eager model "
                                   "(accept_divergent_trace=true): " + message)
            return
        reason = f"{report.method}_diverged"
        raise CompileFailure(reason, message)
    if report.tracer_warnings:
        lines = "; ".join(n.describe() for n in report.tracer_warnings[:5])
        report.warnings.append(
            f"torch.jit.trace warned that the trace may be incorrect ({lines}). The probe inputs "
            "found no divergence, but a trace covers only the paths it recorded."
        )


def _compile_exported(model: torch.nn.Module, spec: CompileSpec, examples: tuple[torch.Tensor, ...],
                      probe_list: list[Probe], eager: list[Outcome], report: CompileReport,
                      redact: Redactor, user_files: set[str], output: Path) -> None:
    """method=export (ExportedProgram) or format=aoti: export, check, save or compile, reload."""
    program, dynamic = export_model(model, examples, report, redact, user_files)
    report.method, report.format = "export", spec.format
    if not dynamic:  # a static program takes only the examples' shapes
        shapes = [tuple(x.shape) for x in examples]
        keep = [i for i, p in enumerate(probe_list) if [tuple(x.shape) for x in p.args] == shapes]
        probe_list, eager = [probe_list[i] for i in keep], [eager[i] for i in keep]
    exported = program.module()
    checks = compare_all(exported, probe_list, eager, redact)
    report.checks["exported_vs_eager"] = checks
    _judge(checks, report, spec, len(probe_list))
    expected = [run(exported, p, redact) for p in probe_list]
    workdir = output.parent
    if spec.format == "aoti":
        compile_aoti(program, output, workdir)
        report.why += "; compiled with AOTInductor to a native library (.pt2 package)"
    else:
        save_exported(program, output, workdir)
    round_trip = reload_and_compare(output, spec.format, probe_list, expected, redact)
    report.checks["reloaded_vs_exported"] = round_trip
    bad = [c for c in round_trip if not c.ok]
    if bad:
        raise CompileFailure(
            "round_trip_failed",
            f"the saved {spec.format} program, loaded back, does not match the exported one on "
            f"'{bad[0].input}' ({bad[0].note or f'max abs diff {bad[0].max_abs_diff:.4g}'}); "
            "nothing was stored",
        )


def _optimize(compiled: torch.jit.ScriptModule, probe_list: list[Probe], expected: list[Outcome],
              report: CompileReport, redact: Redactor) -> tuple[torch.jit.ScriptModule, list[Outcome]]:
    """Freeze + optimize_for_inference, kept only if it matches the compiled module."""
    try:
        optimized = torch.jit.optimize_for_inference(torch.jit.freeze(compiled.eval()))
        checks = compare_all(optimized, probe_list, expected, redact, OPTIMIZED_ATOL, OPTIMIZED_RTOL)
    except Exception as exc:
        reason = redact(f"{type(exc).__name__}: {exception_line(exc)}")[:300]
        report.optimize = {"requested": True, "applied": False, "reason": reason}
        report.warnings.append(f"optimize was requested but failed ({reason}); serving the "
                               "unoptimized module")
        return compiled, expected
    report.checks["optimized_vs_compiled"] = checks
    bad = [c for c in checks if not c.ok]
    diffs = [c.max_abs_diff for c in checks if c.max_abs_diff is not None]
    if bad:
        reason = f"differs on '{bad[0].input}' ({bad[0].note or bad[0].max_abs_diff})"
        report.optimize = {"requested": True, "applied": False, "reason": reason}
        report.warnings.append(f"optimize was requested but the optimized module {reason}; "
                               "serving the unoptimized module")
        return compiled, expected
    report.optimize = {"requested": True, "applied": True, "max_abs_diff": max(diffs, default=0.0),
                       "steps": ["torch.jit.freeze", "torch.jit.optimize_for_inference"]}
    return optimized, [run(optimized, p, redact) for p in probe_list]
