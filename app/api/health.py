"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: every stored model has been loaded",
    responses={503: {"description": "still loading the model store"}},
)
async def ready(request: Request) -> JSONResponse:
    registry = request.app.state.registry
    body = {
        "ready": bool(request.app.state.ready),
        "models": len(registry.names()),
        "failed": registry.load_failures,
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)
