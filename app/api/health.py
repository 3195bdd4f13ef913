"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from app.api.schemas import HealthStatus, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers")
@router.head("/health", summary="Liveness, headers only", operation_id="health_head")
async def health() -> HealthStatus:
    return HealthStatus(status="ok")


@router.head("/ready", summary="Readiness, headers only", operation_id="ready_head",
             response_model=Readiness,
             responses={503: {"description": "still loading the model store", "model": Readiness}})
@router.get(
    "/ready",
    summary="Readiness: every stored model has been loaded",
    response_model=Readiness,
    responses={503: {"description": "still loading the model store", "model": Readiness}},
)
async def ready(request: Request) -> JSONResponse:
    registry = request.app.state.registry
    body = {
        "ready": bool(request.app.state.ready),
        "models": len(registry.names()),
        "failed": registry.load_failures,
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)
