"""Model management: upload, list, describe, download, delete."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, JSONResponse

from app.api.deps import AdminDep, MetricsDep, ReaderDep, RegistryDep, SettingsDep, StoreDep
from app.api.schemas import (
    DefaultVersion,
    Deleted,
    ModelDetail,
    ModelList,
    OperationInfo,
    PinRequest,
    UploadResult,
    VersionInfo,
)
from app.compiler.spec import METHODS
from app.config import Settings
from app.intake.ingest import FILE_FIELDS, FORM_FIELDS, ingest, parse_options
from app.intake.multipart import UploadForm, read_multipart
from app.serving.batching import BatchPolicy
from app.serving.registry import Registry
from app.store import NAME_PATTERN

router = APIRouter(tags=["models"])

_FIELD_TYPES: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "pattern": NAME_PATTERN.pattern},
    "version": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    "max_batch_size": {"type": "integer", "minimum": 1, "maximum": 65536},
    "max_batch_delay_ms": {"type": "number", "minimum": 0, "maximum": 10_000},
    "batching": {"type": "string", "enum": ["auto", "on", "off"]},
    "threads": {"type": "integer", "minimum": 1, "maximum": 16},
    "workers": {"type": "integer", "minimum": 1, "maximum": 16},
    "method": {"type": "string", "enum": list(METHODS)},
    "optimize": {"type": "boolean"},
    "accept_divergent_trace": {"type": "boolean"},
}
_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "TorchScript archive (ScriptModule.save)"},
                        "weights": {"type": "string", "format": "binary",
                                    "description": "eager weights: a state_dict (torch.save) or "
                                                   ".safetensors; compiled to TorchScript"},
                        "source": {"type": "string", "format": "binary",
                                   "description": "the model's .py source (with 'entrypoint'); "
                                                  "runs in an isolated compile process"},
                        **{k: {**_FIELD_TYPES.get(k, {"type": "string"}), "description": v}
                           for k, v in FORM_FIELDS.items()},
                    },
                }
            }
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    202: {"model": OperationInfo, "description": "with Prefer: respond-async: the operation "
          "(Location: /operations/{id}); its result is the 201 body"},
    400: {"description": "bad form field or not a TorchScript archive"},
    401: {"description": "missing or invalid admin token"},
    403: {"description": "source uploads are switched off"},
    409: {"description": "version exists"},
    413: {"description": "upload too large"},
    415: {"description": "not multipart/form-data"},
    422: {"description": "the archive could not be loaded, or the eager model not compiled"},
}


def default_policy(settings: Settings) -> BatchPolicy:
    return BatchPolicy(
        max_batch_size=settings.max_batch_size,
        max_batch_delay_ms=settings.max_batch_delay_ms,
        max_queue_size=settings.max_queue_size,
    )


@router.post(
    "/models",
    status_code=201,
    response_model=UploadResult,
    summary="Upload a model version",
    response_model_exclude_unset=True,
    openapi_extra=_UPLOAD_SCHEMA,
    responses=_ERRORS,
)
async def upload_model(
    request: Request, _: AdminDep, registry: RegistryDep, store: StoreDep, settings: SettingsDep,
    metrics: MetricsDep,
) -> Any:
    staging = store.new_staging_dir()
    started = time.monotonic()
    defaults = request.app.state.default_policy

    async def run(form: UploadForm) -> UploadResult:
        try:
            mv = await ingest(form, staging, registry, defaults, request.app.state.compiler)
        except BaseException as exc:
            store.discard(staging)
            if metrics is not None:
                metrics.record_upload(exc)
            raise
        if metrics is not None:
            metrics.record_upload(None)
        return UploadResult.model_validate({"name": mv.name, **mv.info()})

    tracked = respond_async(request)
    try:
        form = await read_multipart(request, staging, settings.max_upload_bytes, FILE_FIELDS)
        name = parse_options(form, defaults).name if tracked else ""  # a bad form: still a 400
    except BaseException as exc:
        store.discard(staging)
        if metrics is not None:
            metrics.record_upload(exc)
        raise
    if not tracked:
        return await run(form)

    async def work() -> dict[str, Any]:
        return (await run(form)).model_dump(mode="json", exclude_unset=True)

    op = request.app.state.operations.start(name, work, time.monotonic() - started)
    return JSONResponse(op.record(), status_code=202, headers={
        "Location": f"/operations/{op.id}", "Preference-Applied": "respond-async",
    })


def respond_async(request: Request) -> bool:
    """``Prefer: respond-async`` (RFC 7240): answer 202 and track the upload as an operation."""
    prefer = ",".join(request.headers.getlist("prefer")).lower()
    return any(p.split(";")[0].strip() == "respond-async" for p in prefer.split(","))


@router.get("/models", summary="List models and their versions")
async def list_models(_: ReaderDep, registry: RegistryDep) -> ModelList:
    models = []
    for name in registry.names():
        versions = registry.versions(name)
        default = registry.get(name)
        models.append({
            "name": name,
            "default_version": default.version,
            "pinned_version": registry.pinned(name),
            "versions": [mv.version for mv in versions],
            "device": str(default.model.device),
            "signature": default.model.signature.as_dict(),
        })
    return ModelList.model_validate({"models": models})


@router.get("/models/{name}", summary="Describe a model: versions, device, signature, sizes",
            response_model_exclude_unset=True)
async def describe_model(name: str, _: ReaderDep, registry: RegistryDep) -> ModelDetail:
    await registry.resolve(name)
    versions = registry.versions(name)
    return ModelDetail.model_validate({
        "name": name,
        "default_version": registry.default_version(name),
        "pinned_version": registry.pinned(name),
        "versions": [mv.info() for mv in versions],
        **({"quarantined_versions": held} if (held := registry.quarantine.versions(name)) else {}),
    })


@router.get("/models/{name}/versions/{version}", summary="Describe one version",
            response_model_exclude_unset=True)
async def describe_version(name: str, version: int, _: ReaderDep, registry: RegistryDep) -> VersionInfo:
    return VersionInfo.model_validate((await registry.resolve(name, version)).info())


@router.get(
    "/models/{name}/archive",
    summary=("Download the archive as uploaded or compiled (.torchscript: torch::jit::load; "
             ".pt2: torch.export.load / AOTIModelPackageLoader)"),
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def download_archive(
    name: str, _: ReaderDep, registry: RegistryDep, version: int | None = None
) -> FileResponse:
    mv = await registry.resolve(name, version)
    return FileResponse(
        mv.stored.archive,
        media_type="application/zip",
        filename=f"{name}-v{mv.version}.{'torchscript' if mv.model.format == 'torchscript' else 'pt2'}",
    )


@router.delete("/models/{name}", summary="Delete every version of a model")
async def delete_model(name: str, _: AdminDep, registry: RegistryDep) -> Deleted:
    removed = await registry.remove_model(name)
    return Deleted(name=name, deleted_versions=removed)


@router.delete("/models/{name}/versions/{version}", summary="Delete one version")
async def delete_version(
    name: str, version: int, _: AdminDep, registry: RegistryDep
) -> Deleted:
    await registry.remove_version(name, version)
    return Deleted(name=name, deleted_versions=[version])


@router.post(
    "/models/{name}/versions/{version}/retry",
    summary="Load a quarantined (or failed) version again, now",
    responses={409: {"description": "the version is serving"},
               422: {"description": "the load failed again (quarantined again after two)"}},
    response_model_exclude_unset=True,
)
async def retry_version(name: str, version: int, _: AdminDep, registry: RegistryDep) -> VersionInfo:
    return VersionInfo.model_validate((await registry.retry(name, version)).info())


@router.put("/models/{name}/default", summary="Pin the version that serves by default")
async def pin_default(name: str, body: PinRequest, _: AdminDep, registry: RegistryDep) -> DefaultVersion:
    previous = registry.default_version(name)
    await registry.pin(name, body.version)
    return _default_answer(name, registry, previous)


@router.delete("/models/{name}/default", summary="Unpin: the highest version serves by default")
async def unpin_default(name: str, _: AdminDep, registry: RegistryDep) -> DefaultVersion:
    previous = registry.default_version(name)
    await registry.unpin(name)
    return _default_answer(name, registry, previous)


@router.post(
    "/models/{name}/rollback",
    summary="Pin the highest version below the current default",
    responses={409: {"description": "no older version"}},
)
async def rollback(name: str, _: AdminDep, registry: RegistryDep) -> DefaultVersion:
    previous = registry.default_version(name)
    await registry.rollback(name)
    return _default_answer(name, registry, previous)


def _default_answer(name: str, registry: Registry, previous: int) -> DefaultVersion:
    return DefaultVersion(
        name=name,
        default_version=registry.default_version(name),
        pinned_version=registry.pinned(name),
        previous_default=previous,
    )
