"""Trial load: load an uploaded archive first in a separate, resource-limited process.

``torch.jit.load`` runs archive code (``__setstate__``) and parses attacker-controlled
pickles in C++. Doing that first in a child process (``app.sandbox.process``) means an archive
that crashes, hangs or exhausts memory in libtorch kills only the child, and the server
turns it into a 422. The child also checks the graph of every compiled function against
the op policy (``app.intake.screening``), so the server never loads an archive that fails it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import ModelLoadError, UnsafeArchiveError, exception_line, redact_paths
from app.sandbox.process import IsolationError, Limits, run_isolated
from app.store import ARCHIVE_FILE

TASK = "trial_load"



@dataclass(frozen=True)
class TrialLimits:
    """Limits of one trial load (``Settings.trial_*``)."""

    memory_bytes: int = 8 * 1024**3
    timeout_s: float = 120.0


def trial_load(path: Path, uncompressed_bytes: int, limits: TrialLimits) -> dict[str, Any]:
    """Load ``path`` in a child process and check its graphs; raise a 422 if that fails."""
    isolation = Limits(
        memory_bytes=limits.memory_bytes + 2 * uncompressed_bytes,
        cpu_seconds=max(1, math.ceil(limits.timeout_s)),
        wall_seconds=limits.timeout_s,
        threads=1,
    )
    try:
        return run_isolated(TASK, {"archive": ARCHIVE_FILE}, isolation, files={ARCHIVE_FILE: path})
    except IsolationError as exc:
        raise _as_http_error(exc, limits) from None


def _as_http_error(exc: IsolationError, limits: TrialLimits) -> Exception:
    if exc.reason == "unsafe":
        return UnsafeArchiveError(exc.message)
    if exc.reason == "timeout" or exc.reason == "cpu_limit":
        return ModelLoadError(
            f"loading the archive did not finish within {limits.timeout_s:g} s in a trial "
            "process (e.g. a __setstate__ that never returns); refused"
        )
    if exc.reason == "memory_limit":
        return ModelLoadError(
            "loading the archive exceeded the trial process's memory limit; refused"
        )
    if exc.reason == "crashed":
        return ModelLoadError(
            f"loading the archive crashed the trial process ({exc.message}); refused"
        )
    return ModelLoadError(f"could not load the archive: {redact_paths(exc.message)}")


# the child's side ------------------------------------------------------------------------
def run_trial(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker task: load the archive on the CPU and check every compiled function's graph."""
    import torch

    from app.intake.screening import check_functions, check_module, refuse
    from app.sandbox.child import TaskFailure

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    path = str(payload["archive"])
    cpu = torch.device("cpu")
    from app.intake.archive import inspect_zip

    kind = inspect_zip(Path(path)).kind
    if kind in ("exported_program", "aoti"):
        return _trial_pt2(Path(path), kind)
    try:
        if hasattr(torch._C, "import_ir_module"):
            # torch.jit.load's own steps, keeping the CompilationUnit: it lists every compiled
            # function, including ones only reachable through fork or class objects.
            unit = torch._C.CompilationUnit()
            # (torch's stubs for these private bindings are wrong: they take and return more)
            module = torch._C.import_ir_module(unit, path, cpu, {}, False)  # type: ignore[call-arg]
            compiled = list(unit.get_functions())  # type: ignore[func-returns-value,call-overload]
            findings = check_functions(compiled)
            functions = len(compiled)
        else:  # a torch without the private entry point: check what the module exposes
            loaded = torch.jit.load(path, map_location=cpu)
            findings = check_module(loaded)
            functions = -1
            module = loaded
    except RuntimeError as exc:
        message = exception_line(exc)
        memory = "allocate memory" in message or "bad_alloc" in message
        raise TaskFailure("memory_limit" if memory else "load_failed", message) from None
    del module
    if findings:
        raise TaskFailure("unsafe", refuse(findings).message)
    return {"functions": functions}


def _trial_pt2(path: Path, kind: str) -> dict[str, Any]:
    """Load an ExportedProgram (and check its graph) or an AOTInductor package on the CPU."""
    from app.errors import ModelLoadError
    from app.intake.screening import refuse
    from app.sandbox.child import TaskFailure
    from app.serving.exported import AOTIModel, ExportedModel

    try:
        model = ExportedModel.load(path, "cpu") if kind == "exported_program" else AOTIModel.load(path, "cpu")
    except ModelLoadError as exc:
        memory = "allocate memory" in exc.message or "bad_alloc" in exc.message
        raise TaskFailure("memory_limit" if memory else "load_failed", exc.message) from None
    findings = model.graph_findings()
    if findings:
        raise TaskFailure("unsafe", refuse(findings).message)
    return {"functions": -1, "format": kind}
