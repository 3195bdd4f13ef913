"""Turning an upload form into a committed, serving model version."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from app.compiler import service as compiler_service
from app.compiler.service import Compiler
from app.compiler.spec import SpecError, parse_examples
from app.errors import BadRequestError, ConflictError
from app.intake import signature
from app.intake.archive import require_servable
from app.intake.multipart import UploadForm
from app.intake.operations import stage
from app.serving.batching import BatchPolicy
from app.serving.registry import ModelVersion, Registry
from app.store import ARCHIVE_FILE, validate_name

FILE_FIELDS = frozenset({"file"}) | compiler_service.FILE_FIELDS
FORM_FIELDS = {
    "name": "model name: ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "version": "integer version; default: one more than the highest",
    "device": "auto, cpu, cuda or cuda:N; default: the server's SCRIPTSERVE_DEVICE",
    "max_batch_size": "most samples in one forward pass; default: SCRIPTSERVE_MAX_BATCH_SIZE",
    "max_batch_delay_ms": "how long a batch may wait to fill; default: SCRIPTSERVE_MAX_BATCH_DELAY_MS",
    "batching": "auto (probe batch safety), on, or off",
    "threads": "inference threads for this model (alias: workers)",
    "workers": "old name of threads",
    **compiler_service.FORM_FIELDS,
    **signature.FIELDS,
}


@dataclass(frozen=True)
class UploadOptions:
    name: str
    version: int | None
    device: str | None
    policy: BatchPolicy


def _int_field(fields: dict[str, str], key: str, lo: int, hi: int) -> int | None:
    raw = fields.get(key, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"form field {key!r} must be an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise BadRequestError(f"form field {key!r} must be between {lo} and {hi}, got {value}")
    return value


def parse_options(form: UploadForm, defaults: BatchPolicy) -> UploadOptions:
    """Validate the non-file fields of an upload."""
    unknown = sorted(set(form.fields) - set(FORM_FIELDS))
    if unknown:
        raise BadRequestError(f"unknown form fields {unknown}; expected {sorted(FORM_FIELDS)}")
    if "name" not in form.fields:
        raise BadRequestError("form field 'name' is required")
    name = validate_name(form.fields["name"].strip())
    delay_raw = form.fields.get("max_batch_delay_ms", "").strip()
    delay = defaults.max_batch_delay_ms
    if delay_raw:
        try:
            delay = float(delay_raw)
        except ValueError:
            raise BadRequestError("form field 'max_batch_delay_ms' must be a number") from None
        if not 0 <= delay <= 10_000:
            raise BadRequestError("form field 'max_batch_delay_ms' must be between 0 and 10000")
    mode = form.fields.get("batching", "").strip().lower() or defaults.mode
    if mode not in {"auto", "on", "off"}:
        raise BadRequestError("form field 'batching' must be auto, on or off")
    policy = BatchPolicy(
        max_batch_size=_int_field(form.fields, "max_batch_size", 1, 65536) or defaults.max_batch_size,
        max_batch_delay_ms=delay,
        max_queue_size=defaults.max_queue_size,
        threads=(_int_field(form.fields, "threads", 1, 16) or _int_field(form.fields, "workers", 1, 16)
                 or defaults.threads),
        mode=mode,  # type: ignore[arg-type]
    )
    return UploadOptions(
        name=name,
        version=_int_field(form.fields, "version", 1, 2**31 - 1),
        device=form.fields.get("device", "").strip() or None,
        policy=policy,
    )


async def ingest(
    form: UploadForm,
    staging: Any,
    registry: Registry,
    defaults: BatchPolicy,
    compiler: Compiler | None = None,
) -> ModelVersion:
    """Check the uploaded archive (or compile the eager model), load, commit and serve it."""
    options = parse_options(form, defaults)
    declared = signature.parse_declared(form.fields)
    if Compiler.wants(form):
        if "file" in form.files:
            raise BadRequestError(
                "send either a TorchScript archive as 'file' or an eager model as "
                "'weights' / 'source', not both"
            )
        if compiler is None:
            raise BadRequestError("this server does not compile eager models; upload a TorchScript archive")
        return await _ingest_eager(form, staging, registry, options, compiler, declared)
    eager_only = sorted(set(form.fields) & set(compiler_service.FORM_FIELDS) - {"example_inputs"})
    if eager_only:
        raise BadRequestError(
            f"form fields {eager_only} apply to eager uploads ('weights' / 'source'), "
            "not to a TorchScript archive"
        )
    upload = form.files.get("file")
    if upload is None or upload.size == 0:
        raise BadRequestError(
            "no archive: send the TorchScript archive as form field 'file' "
            "(curl -F file=@model.torchscript)"
        )
    # fast 400/413/422 on the structure; Registry.add runs the whole gate (app.intake.gate)
    gate = registry.loader.gate
    info = require_servable(upload.path, gate.zip_limits if gate else None)
    try:
        examples = parse_examples(form.fields.get("example_inputs", ""))
    except SpecError as exc:
        raise BadRequestError(str(exc)) from None
    os.replace(upload.path, staging / ARCHIVE_FILE)
    meta: dict[str, Any] = {"source": "archive", "format": info.kind,
                            "original_filename": upload.filename[:200]}
    if examples:
        meta["example_inputs"] = examples  # warm-up, batch-safety probe and signature at load
    if declared:
        meta["io_spec"] = declared
    return await registry.add(
        options.name, staging, options.version, options.device, options.policy, extra_meta=meta
    )


async def _ingest_eager(
    form: UploadForm, staging: Any, registry: Registry, options: UploadOptions, compiler: Compiler,
    declared: dict[str, Any] | None,
) -> ModelVersion:
    """Compile weights / source to ``staging/model.torchscript`` in an isolated process, then add it."""
    plan = compiler.plan(form)
    if options.version is not None and options.version in registry.store.versions(options.name):
        # before spending a compile: the same 409 that Registry.add would give
        raise ConflictError(f"model {options.name!r} version {options.version} already exists")
    stage("compiling")
    report = await compiler.compile(plan, staging / ARCHIVE_FILE)
    for upload in form.files.values():  # only the compiled archive is kept
        upload.path.unlink(missing_ok=True)
    info = require_servable(staging / ARCHIVE_FILE)
    warnings = report.pop("warnings", [])
    return await registry.add(
        options.name,
        staging,
        options.version,
        options.device,
        options.policy,
        extra_meta={
            "source": "compiled",
            "format": info.kind,
            "original_filename": plan.original_filename,
            "compile": report,
            "warnings": warnings,
            "example_inputs": plan.spec.examples,
            **({"io_spec": declared} if declared else {}),
        },
    )
