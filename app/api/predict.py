"""Predictions: decode, enqueue on the version's batcher, encode."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.api.deps import ReaderDep, RegistryDep, SettingsDep
from app.codec import decode_inputs, dump_json, parse_json, to_wire
from app.errors import UnsupportedMediaTypeError
from app.registry import Registry

router = APIRouter(tags=["predict"])

_TENSOR = {
    "oneOf": [
        {"type": "array", "items": {}, "description": "nested numeric list"},
        {"type": "number"},
        {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {"type": "array", "items": {}},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "dtype": {"type": "string", "enum": [
                    "float16", "float32", "float64", "bfloat16", "int8", "int16", "int32",
                    "int64", "uint8", "bool"]},
            },
        },
    ]
}
_PREDICT_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "inputs": {
                            "description": "one tensor for a one-input model; a list in "
                            "positional order or an object keyed by argument name otherwise",
                            "oneOf": [_TENSOR, {"type": "object", "additionalProperties": _TENSOR}],
                        }
                    },
                },
                "example": {"inputs": [[0.1, 0.2, 0.3]]},
            }
        },
    }
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "outputs mirroring the model's output structure",
          "content": {"application/json": {"example": {"model": "classifier", "version": 1,
                                                        "outputs": [[0.48, 0.52]]}}}},
    400: {"description": "body is not JSON {\"inputs\": ...}"},
    404: {"description": "no such model or version"},
    413: {"description": "body too large"},
    415: {"description": "unsupported content type"},
    422: {"description": "inputs do not fit the model, or the model raised on them"},
    503: {"description": "queue full (Retry-After) or model not ready"},
    504: {"description": "deadline exceeded"},
}
# curl -d sends form-urlencoded by default; the body is still JSON, so take it.
_JSON_TYPES = {"application/json", "text/plain", "application/x-www-form-urlencoded", ""}
TimeoutQuery = Query(None, gt=0, le=3600, description="deadline for this request in seconds")


async def _predict(
    registry: Registry, name: str, version: int | None, request: Request, timeout_s: float
) -> Response:
    registry.get(name, version)  # 404 before reading the body
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"unsupported content type {content_type!r}; send application/json"
        )
    payload = parse_json(await request.body())
    # Resolve after the last await before submit: a version removed while the body arrived
    # is never used, so requests for the default version always reach one that is serving.
    mv = registry.get(name, version)
    signature = mv.model.signature
    inputs = decode_inputs(payload, signature.names, signature.required)
    output = await mv.batcher.submit(inputs, timeout_s)
    body = {"model": mv.name, "version": mv.version, "outputs": to_wire(output)}
    return Response(dump_json(body), media_type="application/json")


@router.post(
    "/models/{name}/predict",
    summary="Predict with the default (highest) version",
    openapi_extra=_PREDICT_SCHEMA,
    responses=_RESPONSES,
    response_class=Response,
)
async def predict(
    name: str, request: Request, _: ReaderDep, registry: RegistryDep, settings: SettingsDep,
    timeout_s: float | None = TimeoutQuery,
) -> Response:
    return await _predict(registry, name, None, request, timeout_s or settings.request_timeout_s)


@router.post(
    "/models/{name}/versions/{version}/predict",
    summary="Predict with one version",
    openapi_extra=_PREDICT_SCHEMA,
    responses=_RESPONSES,
    response_class=Response,
)
async def predict_version(
    name: str, version: int, request: Request, _: ReaderDep, registry: RegistryDep,
    settings: SettingsDep, timeout_s: float | None = TimeoutQuery,
) -> Response:
    return await _predict(registry, name, version, request, timeout_s or settings.request_timeout_s)
