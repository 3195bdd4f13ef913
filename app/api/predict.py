"""Predictions: the documented routes.

On a running app, ``app.api.middleware.fastpath.PredictFastPath`` answers these paths before
FastAPI's routing and dependency solving (a large share of per-request CPU). These routes
document them (OpenAPI) and answer with the same function, should a request reach them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.api.middleware.fastpath import answer_prediction
from app.api.schemas import PredictResponse

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
            },
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
            "application/x-npz": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "outputs mirroring the model's output structure",
          "model": PredictResponse,
          "content": {"application/json": {"example": {"model": "classifier", "version": 1,
                                                        "outputs": [[0.48, 0.52]]}},
                      "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
                      "application/x-npz": {"schema": {"type": "string", "format": "binary"}}}},
    400: {"description": "body is not JSON {\"inputs\": ...}"},
    404: {"description": "no such model or version"},
    413: {"description": "body too large"},
    415: {"description": "unsupported content type"},
    422: {"description": "inputs do not fit the model, or the model raised on them"},
    503: {"description": "queue full (Retry-After) or model not ready"},
    504: {"description": "deadline exceeded"},
}
TimeoutQuery = Query(None, gt=0, le=3600, description="deadline for this request in seconds")


async def _answer(request: Request, name: str, version: int | None) -> Response:
    # The same function the fast path calls: one sequence of checks for every prediction.
    answer = await answer_prediction(
        request.app.state, request.scope, request.receive, name,
        None if version is None else str(version),
    )
    return Response(answer.body, status_code=answer.status, headers=answer.headers,
                    media_type=answer.media_type.decode())


@router.post(
    "/models/{name}/predict",
    summary="Predict with the default version (the pinned one, else the highest)",
    openapi_extra=_PREDICT_SCHEMA,
    responses=_RESPONSES,
    response_class=Response,
)
async def predict(name: str, request: Request, timeout_s: float | None = TimeoutQuery) -> Response:
    return await _answer(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/predict",
    summary="Predict with one version",
    openapi_extra=_PREDICT_SCHEMA,
    responses=_RESPONSES,
    response_class=Response,
)
async def predict_version(
    name: str, version: int, request: Request, timeout_s: float | None = TimeoutQuery
) -> Response:
    return await _answer(request, name, version)
