"""Open Inference Protocol (KServe v2) beside the native API, so Triton and KServe clients work.

Inference goes through the same per-version batcher as ``/models/{name}/predict``: v2 and
native requests with the same dtypes and shapes share batches. Errors under ``/v2`` are
``{"error": "<message>"}`` (see ``app.api.errors``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from app import __version__
from app.api.deps import ReaderDep, RegistryDep, SettingsDep
from app.api.middleware.request_context import attribute
from app.api.schemas import (
    InferResponseV2,
    LivenessV2,
    ModelMetadataV2,
    ModelReadyV2,
    ReadinessV2,
    ServerMetadataV2,
)
from app.config import Settings
from app.errors import NotFoundError
from app.serving import pipeline
from app.serving.model_version import ModelVersion
from app.serving.registry import Registry
from app.wire.v2 import (
    HEADER_LENGTH,
    bind_inputs,
    encode_response,
    header_length,
    inflate,
    model_metadata,
    parse_request,
)

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])

EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]
_INFER_ANSWER: dict[int | str, dict[str, Any]] = {200: {
    "description": "outputs (JSON, or a JSON header then raw tensors when binary data was asked for)",
    "model": InferResponseV2,
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}}
_INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "example": {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                                        "data": [0.5, -1.0]}]},
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary",
                           "description": "JSON header of Inference-Header-Content-Length bytes, "
                           "then the raw tensors announced by binary_data_size"}
            },
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed request: JSON, datatype, shape, binary sizes"},
    404: {"description": "no such model or version"},
    422: {"description": "inputs do not fit the model, or the model raised on them"},
    503: {"description": "queue full or not ready"},
    504: {"description": "deadline exceeded"},
}


def _version_number(name: str, version: str | None) -> int | None:
    if version is None:
        return None
    if not version.isdigit():
        raise NotFoundError(f"model {name!r} has no version {version!r}")
    return int(version)


async def _version(registry: Registry, name: str, version: str | None) -> ModelVersion:
    return await registry.resolve(name, _version_number(name, version))


@router.get("", summary="Server metadata")
async def server_metadata() -> ServerMetadataV2:
    return ServerMetadataV2(name="scriptserve", version=__version__, extensions=EXTENSIONS)


@router.get("/health/live", summary="Server liveness")
@router.head("/health/live", summary="Server liveness, headers only", operation_id="live_head")
async def live() -> LivenessV2:
    return LivenessV2(live=True)


@router.head("/health/ready", summary="Server readiness, headers only", operation_id="ready_v2_head",
             response_model=ReadinessV2,
             responses={503: {"description": "still loading", "model": ReadinessV2}})
@router.get("/health/ready", summary="Server readiness: every stored model is loaded",
            response_model=ReadinessV2,
            responses={503: {"description": "still loading", "model": ReadinessV2}})
async def ready(request: Request) -> JSONResponse:
    is_ready = bool(request.app.state.ready)
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}", summary="Model metadata (default version)",
            response_model_exclude_unset=True)
async def metadata(name: str, _: ReaderDep, registry: RegistryDep) -> ModelMetadataV2:
    default = await registry.resolve(name)
    versions = [mv.version for mv in registry.versions(name)]
    return ModelMetadataV2.model_validate(model_metadata(default, versions))


@router.get("/models/{name}/versions/{version}", summary="Model metadata (one version)",
            response_model_exclude_unset=True)
async def version_metadata(
    name: str, version: str, _: ReaderDep, registry: RegistryDep
) -> ModelMetadataV2:
    mv = await _version(registry, name, version)
    return ModelMetadataV2.model_validate(model_metadata(mv, [mv.version]))


@router.get("/models/{name}/ready", summary="Model readiness (default version)",
            response_model_exclude_unset=True)
async def model_ready(name: str, _: ReaderDep, registry: RegistryDep) -> ModelReadyV2:
    return ModelReadyV2(name=name, ready=await registry.resolve(name) is not None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness (one version)")
async def version_ready(
    name: str, version: str, _: ReaderDep, registry: RegistryDep
) -> ModelReadyV2:
    mv = await _version(registry, name, version)
    return ModelReadyV2(name=name, version=str(mv.version), ready=True)


async def _infer(
    registry: Registry, name: str, version: str | None, request: Request, settings: Settings
) -> Response:
    number = _version_number(name, version)
    mv, raw = await pipeline.resolve_and_read(registry, name, number, request.body)
    attribute(request.scope, mv.batcher.observer)
    body = inflate(raw, request.headers.get("content-encoding"), settings.max_body_bytes)
    infer = parse_request(body, header_length(request.headers.get(HEADER_LENGTH)))
    inputs = bind_inputs(infer.inputs, mv.model.signature)
    output = await pipeline.submit(mv, inputs, infer.timeout_s or settings.request_timeout_s)
    content, json_length = encode_response(mv.name, mv.version, infer, output)
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(json_length)},
    )


@router.post(
    "/models/{name}/infer",
    summary="Inference with the default version (JSON or binary tensors)",
    openapi_extra=_INFER_DOC,
    responses={**_INFER_ANSWER, **_ERRORS},
    response_class=Response,
)
async def infer(
    name: str, request: Request, _: ReaderDep, registry: RegistryDep, settings: SettingsDep
) -> Response:
    return await _infer(registry, name, None, request, settings)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference with one version (JSON or binary tensors)",
    openapi_extra=_INFER_DOC,
    responses={**_INFER_ANSWER, **_ERRORS},
    response_class=Response,
)
async def infer_version(
    name: str, version: str, request: Request, _: ReaderDep, registry: RegistryDep,
    settings: SettingsDep,
) -> Response:
    return await _infer(registry, name, version, request, settings)
