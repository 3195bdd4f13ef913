"""Server side of compilation: validate an eager upload, compile it in an isolated process.

Nothing here runs uploaded code or unpickles anything: the form is checked, the weights
file is classified from its bytes, and the work happens in ``python -m app.sandbox.child compile``
under the limits from the settings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.compiler.forms import (
    BUILTIN_ARCHITECTURES,
    BUILTIN_EXAMPLES,
    inspect_weights,
    resolve_architecture,
)
from app.compiler.report import Redactor
from app.compiler.spec import (
    ArchitectureSpec,
    CompileSpec,
    PickledModuleSpec,
    SourceSpec,
    SpecError,
    parse_bool,
    parse_examples,
    parse_format,
    parse_init_kwargs,
    parse_method,
)
from app.compiler.task import OUTPUT_FILE, SOURCE_FILE, WEIGHTS_FILE
from app.config import Settings
from app.errors import BadRequestError, CompileError, ForbiddenError
from app.intake.multipart import UploadedFile, UploadForm
from app.sandbox.process import IsolationError, Limits, run_isolated

log = logging.getLogger(__name__)

FILE_FIELDS = frozenset({"weights", "source"})
FORM_FIELDS = {
    "architecture": "with 'weights': the model class, e.g. Classification, or a configured import path",
    "entrypoint": "with 'source': the nn.Module class or factory function in the source",
    "init_kwargs": 'JSON object of keyword arguments for the class or factory, e.g. {"width": 64}',
    "method": "auto (script, else trace; default), script, trace, or export (torch.export with a "
              "dynamic batch dimension, stored as an ExportedProgram .pt2)",
    "format": "torchscript (default), exported_program (as method=export) or aoti (torch.export, then "
              "AOTInductor: a native library; needs a C++ compiler, takes a minute or more)",
    "example_inputs": 'JSON list, one entry per input: [{"shape": [1, 320], "dtype": "float32"}] '
                      "or nested lists of values",
    "optimize": "true: freeze + optimize_for_inference, kept only if the outputs match",
    "accept_divergent_trace": "true: serve a trace that differs from the eager model (with a warning)",
}


@dataclass(frozen=True)
class CompilePlan:
    """A validated eager upload: the spec and the files the compile process gets."""

    spec: CompileSpec
    files: dict[str, Path]

    @property
    def original_filename(self) -> str:
        if isinstance(self.spec, SourceSpec):
            return self.spec.source_name
        return self.spec.weights_name or ""


class Compiler:
    """Turns eager uploads into TorchScript archives, one isolated process per upload."""

    def __init__(
        self, settings: Settings, observer: Callable[[str, float, BaseException | None], None] | None = None
    ) -> None:
        self.settings = settings
        self.observer = observer  # metrics: (method, seconds, error) once per compilation
        self.limits = Limits(
            memory_bytes=settings.compile_memory_bytes,
            cpu_seconds=settings.compile_cpu_s,
            wall_seconds=settings.compile_timeout_s,
            threads=settings.compile_threads,
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_compiles)

    @staticmethod
    def wants(form: UploadForm) -> bool:
        """True if the upload is an eager model (weights and/or source)."""
        return any(name in form.files for name in FILE_FIELDS)

    def plan(self, form: UploadForm) -> CompilePlan:
        """Validate the eager upload's fields and files (400 / 403 / 422); no code runs."""
        try:
            return self._plan(form)
        except SpecError as exc:
            raise BadRequestError(str(exc)) from None

    def _plan(self, form: UploadForm) -> CompilePlan:
        fields = {k: v.strip() for k, v in form.fields.items()}
        weights, source = _nonempty(form, "weights"), _nonempty(form, "source")
        architecture, entrypoint = fields.get("architecture", ""), fields.get("entrypoint", "")
        common: dict[str, Any] = {
            "method": parse_method(fields.get("method", "")),
            "format": "torchscript",
            "examples": parse_examples(fields.get("example_inputs", "")),
            "init_kwargs": parse_init_kwargs(fields.get("init_kwargs", "")),
            "optimize": parse_bool(fields.get("optimize", ""), "optimize"),
            "accept_divergent_trace": parse_bool(fields.get("accept_divergent_trace", ""),
                                                 "accept_divergent_trace"),
        }
        common["format"] = parse_format(fields.get("format", ""), common["method"])
        if common["format"] != "torchscript":
            common["method"] = "export"
            if common["optimize"]:
                raise SpecError("optimize applies to TorchScript (freeze + optimize_for_inference), "
                                "not to method=export or format=aoti")
        if common["format"] == "aoti" and not self.settings.allow_aoti_uploads:
            raise ForbiddenError("AOTInductor packages are switched off on this server "
                                 "(SCRIPTSERVE_ALLOW_AOTI_UPLOADS); use method=export or script")
        files: dict[str, Path] = {}
        if source is not None:
            if not self.settings.allow_source_uploads:
                raise ForbiddenError(
                    "source uploads are switched off on this server (SCRIPTSERVE_ALLOW_SOURCE_UPLOADS); "
                    "upload weights for a known architecture, or a TorchScript archive as 'file'"
                )
            if architecture:
                raise SpecError("send either 'architecture' (with weights) or 'source', not both")
            if not entrypoint.isidentifier():
                raise SpecError(
                    "'entrypoint' is required with 'source': the name of the nn.Module class or "
                    "factory function in it, e.g. entrypoint=Classification"
                )
            files[SOURCE_FILE] = source.path
        elif entrypoint:
            raise SpecError("'entrypoint' names a class in the uploaded 'source'; send the source too")
        elif weights is None:
            raise SpecError("an eager upload needs 'weights' (with 'architecture') or 'source'")
        pickled = False
        if weights is not None:
            info = inspect_weights(weights.path)
            if info.format == "pickle" and not self.settings.trust_pickled_modules:
                raise CompileError(info.refusal(), reason="pickled_module")
            common.update(weights_file=WEIGHTS_FILE, weights_format=info.format,
                          weights_name=_display_name(weights, "weights"))
            files[WEIGHTS_FILE] = weights.path
            if source is None and not architecture:
                if info.format != "pickle":
                    raise SpecError(
                        "a state_dict needs the model it belongs to: send 'architecture' (one of "
                        f"{self.architectures()}) or the model's 'source' with 'entrypoint'"
                    )
                pickled = True
        spec: CompileSpec
        if source is not None:
            spec = SourceSpec(**common, source_file=SOURCE_FILE, entrypoint=entrypoint,
                              source_name=_display_name(source, "model.py"))
        elif pickled:
            if common["init_kwargs"]:
                raise SpecError("'init_kwargs' apply to 'architecture' or 'source', not to a pickled module")
            spec = PickledModuleSpec(**common)
        else:
            path = resolve_architecture(architecture, self.settings.architectures)
            common["examples"] = common["examples"] or list(BUILTIN_EXAMPLES.get(path, []))
            spec = ArchitectureSpec(**common, architecture=path)
        if not spec.examples:
            raise SpecError(
                "'example_inputs' is required: the compiled module is checked against the eager "
                'one on them, e.g. example_inputs=[{"shape": [1, 320], "dtype": "float32"}]'
            )
        return CompilePlan(spec, files)

    def architectures(self) -> list[str]:
        """Names an upload may give as 'architecture'."""
        return sorted({*BUILTIN_ARCHITECTURES, *self.settings.architectures})

    async def compile(self, plan: CompilePlan, output: Path) -> dict[str, Any]:
        """Run the compile process; write ``output``; return the report (422 on failure)."""
        start = time.monotonic()
        try:
            report = await self._compile(plan, output)
        except BaseException as exc:
            if self.observer is not None:
                self.observer(plan.spec.method, time.monotonic() - start, exc)
            raise
        if self.observer is not None:
            self.observer(str(report.get("method") or plan.spec.method), time.monotonic() - start, None)
        return report

    async def _compile(self, plan: CompilePlan, output: Path) -> dict[str, Any]:
        async with self._slots:
            try:
                result = await asyncio.to_thread(
                    run_isolated, "compile", {"spec": plan.spec.to_payload()}, self.limits,
                    files=plan.files, outputs={OUTPUT_FILE: output},
                )
            except IsolationError as exc:
                log.info("compile of %s failed: %s", plan.spec.form, exc.reason)
                raise CompileError(self._explain(exc), reason=exc.reason) from None
        report = result.get("report")
        if not isinstance(report, dict):
            raise CompileError("the compile process returned no report")
        return report

    def _explain(self, exc: IsolationError) -> str:
        limits, message = self.limits, Redactor()(str(exc.message))  # the child wrote it: a str?
        if exc.reason == "timeout":
            return (f"the compile process ran longer than its wall-clock limit of "
                    f"{limits.wall_seconds:g} s and was killed; does the model's code loop forever? "
                    "A model that needs longer: raise SCRIPTSERVE_COMPILE_TIMEOUT_S. Nothing was stored.")
        if exc.reason == "cpu_limit":
            return (f"the compile process used more than its CPU-time limit of {limits.cpu_seconds} s "
                    "and was killed; does the model's code loop forever? A model that needs longer: "
                    "raise SCRIPTSERVE_COMPILE_CPU_S. Nothing was stored.")
        if exc.reason == "memory_limit":
            return (f"the compile process exceeded its memory limit of {limits.memory_bytes // 2**20} "
                    f"MiB (raise SCRIPTSERVE_COMPILE_MEMORY_BYTES for a larger model): {message}")
        if exc.reason == "crashed":
            return f"the compile process crashed: {message}"
        return message


def _nonempty(form: UploadForm, name: str) -> UploadedFile | None:
    upload = form.files.get(name)
    if upload is not None and upload.size == 0:
        raise SpecError(f"file field {name!r} is empty")
    return upload


def _display_name(upload: UploadedFile, default: str) -> str:
    name = Path(upload.filename.replace("\\", "/")).name[:100]
    return name or default
