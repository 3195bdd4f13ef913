"""Entry point of the isolated compile process (``python -m app.sandbox.child compile``).

Its working directory holds ``payload.json`` and the uploaded files under fixed names; it
writes ``model.torchscript`` there and returns the compile report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.compiler.report import Redactor
from app.compiler.spec import CompileFailure, CompileSpec, SourceSpec
from app.sandbox.child import TaskFailure
from app.store import ARCHIVE_FILE

OUTPUT_FILE = ARCHIVE_FILE  # the compiled archive, as the store names it
SOURCE_FILE = "user_model.py"
WEIGHTS_FILE = "weights.bin"


def compile_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Compile the spec in ``payload``; raise TaskFailure with a user-facing message."""
    from app.compiler.compile import compile_eager  # imports torch: only in the child

    workdir = Path.cwd()
    spec = CompileSpec.from_payload(payload["spec"])
    names = {str(workdir): "."}
    if isinstance(spec, SourceSpec):
        names[str(workdir / spec.source_file)] = spec.source_name
    if spec.weights_file:
        names[str(workdir / spec.weights_file)] = spec.weights_name or "weights"
    try:
        report = compile_eager(spec, workdir, workdir / OUTPUT_FILE, Redactor(names))
    except CompileFailure as exc:
        raise TaskFailure(exc.reason, exc.message) from None
    return {"report": report}
