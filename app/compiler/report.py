"""The compile report stored with a version, and the messages a failed compile returns."""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.errors import redact_paths

MAX_MESSAGE_CHARS = 4000


@dataclass
class CheckResult:
    """One comparison of two modules on one named input."""

    input: str
    max_abs_diff: float | None
    ok: bool
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input, "ok": self.ok,
                               "max_abs_diff": _finite(self.max_abs_diff)}
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class TracerNote:
    """A TracerWarning with where it came from."""

    message: str
    file: str
    line: int
    code: str

    def describe(self) -> str:
        return f"{self.file} line {self.line}: `{self.code}` -- {self.message}"


@dataclass
class CompileReport:
    """What was compiled, how, why, and how well it matched the eager model."""

    form: str
    method_requested: str
    method: str = ""
    format: str = "torchscript"  # or exported_program / aoti (method=export, format=aoti)
    why: str = ""
    model: str = ""
    weights: dict[str, Any] | None = None
    examples: list[str] = field(default_factory=list)
    script_error: str | None = None
    tracer_warnings: list[TracerNote] = field(default_factory=list)
    checks: dict[str, list[CheckResult]] = field(default_factory=dict)
    optimize: dict[str, Any] = field(default_factory=lambda: {"requested": False})
    accepted_divergence: bool = False
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    torch_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tracer_warnings"] = [asdict(t) for t in self.tracer_warnings]
        out["checks"] = {k: [c.as_dict() for c in v] for k, v in self.checks.items()}
        out["seconds"] = round(self.seconds, 3)
        return out


def _finite(value: float | None) -> float | str | None:
    if value is None:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return float(f"{value:.6g}")


def divergence_message(method: str, failures: list[CheckResult], notes: list[TracerNote],
                       probes: int) -> str:
    """The 422 text for a compiled module that does not match the eager model."""
    worst = failures[0]
    diff = "an error" if worst.max_abs_diff is None else f"max abs diff {worst.max_abs_diff:.4g}"
    parts = [
        f"the {method}d module does not match the eager model: on input '{worst.input}' it "
        f"differs by {diff}" + (f" ({worst.note})" if worst.note not in (None, "at output") else "") + "."
    ]
    if len(failures) > 1:
        others = ", ".join(f"'{f.input}'" for f in failures[1:4])
        parts.append(f"It also diverged on {others} ({len(failures)} of {probes} probe inputs).")
    if method == "trace":
        parts.append(
            "torch.jit.trace records only the operations that ran for the example inputs, so "
            "data-dependent control flow (an `if` on tensor values) is frozen to the branch the "
            "example took."
        )
        if notes:
            parts.append("Tracer warnings: " + "; ".join(n.describe() for n in notes[:5]) + ".")
        parts.append(
            "Use method=script (or auto) to compile the control flow, or set "
            "accept_divergent_trace=true to serve this trace knowingly."
        )
    return " ".join(parts)


class Redactor:
    """Replace server file-system paths in messages with the names the user knows."""

    def __init__(self, names: dict[str, str] | None = None, every_path: bool = True) -> None:
        self.names = {str(k): v for k, v in (names or {}).items()}
        self.every_path = every_path  # False in the offline CLI: the paths are the user's own

    def __call__(self, text: str) -> str:
        for path, name in sorted(self.names.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(path, name)
        if self.every_path:
            text = redact_paths(text, lambda path: Path(path.rstrip("/")).name)
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS] + " [...]"
        return text


def user_frame(exc: BaseException, user_files: set[str]) -> traceback.FrameSummary | None:
    """The innermost frame of ``exc`` in user code (a listed file, else outside torch/app)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if frame.filename in user_files:
            return frame
    import torch  # only in the compile process

    skip = tuple(str(Path(m.__file__ or "").parent) for m in (torch, traceback))
    skip += (str(Path(__file__).parent),)
    for frame in reversed(frames):
        if not frame.filename.startswith(skip) and not frame.filename.startswith("<"):
            return frame
    return None


def explain(exc: BaseException, what: str, user_files: set[str]) -> str:
    """``what: Type: message (file line N: `code`)`` for an exception raised by model code."""
    if isinstance(exc, SyntaxError):
        where = f" ({exc.filename} line {exc.lineno}: `{(exc.text or '').strip()}`)"
        return f"{what}: SyntaxError: {exc.msg}{where}"
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0] if text else ''}"
    frame = user_frame(exc, user_files)
    where = f" ({frame.filename} line {frame.lineno}: `{(frame.line or '').strip()}`)" if frame else ""
    return f"{what}: {message[:1000]}{where}"

