"""Collaborators for routes, read from ``app.state`` (set by ``create_app``).

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, a thread
hop per dependency per request on the hot path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.security import check_token
from app.serving.registry import Registry
from app.store import ModelStore
from app.telemetry.prometheus import Metrics


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_store(request: Request) -> ModelStore:
    return request.app.state.store


async def get_metrics(request: Request) -> Metrics | None:
    """None when metrics are switched off."""
    return request.app.state.metrics


async def require_admin(request: Request) -> None:
    """Management calls need the admin token."""
    check_token(request.headers.get("authorization"), request.app.state.admin_token)


async def require_reader(request: Request) -> None:
    """Predict, code and listing are open unless an inference token is configured."""
    token = request.app.state.settings.inference_token
    if token:
        check_token(request.headers.get("authorization"), token, request.app.state.admin_token)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
MetricsDep = Annotated[Metrics | None, Depends(get_metrics)]
AdminDep = Annotated[None, Depends(require_admin)]
ReaderDep = Annotated[None, Depends(require_reader)]
