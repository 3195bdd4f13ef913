"""Triton's extensions of the Open Inference Protocol over HTTP: model configuration, model
repository (index, load, unload) and statistics, so Triton client code that calls them works.

Included before ``app.api.v2``'s router: ``/v2/models/stats`` must not be taken for a model
named ``stats``. Errors are ``{"error": "<message>"}``, as everywhere under ``/v2``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request

from app.api.deps import AdminDep, ReaderDep, RegistryDep
from app.errors import BadRequestError, NotFoundError
from app.serving.model_version import ModelVersion
from app.serving.registry import Registry
from app.telemetry import group_stats
from app.wire import triton

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])


def _number(name: str, version: str | None) -> int | None:
    if version is None:
        return None
    if not version.isdigit():
        raise NotFoundError(f"model {name!r} has no version {version!r}")
    return int(version)


def _config(registry: Registry, name: str, version: str | None) -> dict[str, Any]:
    mv = registry.get(name, _number(name, version))
    return triton.model_config(mv, [v.version for v in registry.versions(name)])


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequestError("body must be a JSON object")
    return doc


def check_load_parameters(parameters: Any) -> None:
    """Load/unload parameters ScriptServe cannot honour are refused, not ignored."""
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise BadRequestError('"parameters" must be an object')
    refused = sorted(k for k in parameters if k == "config" or k.startswith("file:"))
    if refused:
        raise BadRequestError(
            f"load parameters {refused} are not supported: upload a new version with POST /models"
        )


async def _statistics(request: Request, mvs: list[ModelVersion], name: str | None) -> dict[str, Any]:
    """With ``--workers``, the numbers of every worker (a silent one is left out)."""
    auth = {"Authorization": request.headers["authorization"]} if "authorization" in request.headers else {}
    return await group_stats.triton_statistics(request.app.state.settings, mvs, name, auth)


@router.get("/models/stats", summary="Statistics of every served version (Triton extension)")
async def all_stats(request: Request, _: ReaderDep, registry: RegistryDep) -> dict[str, Any]:
    mvs = sorted(registry.all_versions(), key=lambda mv: (mv.name, mv.version))
    return await _statistics(request, mvs, None)


@router.get("/models/{name}/config", summary="Model configuration, default version (Triton extension)")
async def config(name: str, _: ReaderDep, registry: RegistryDep) -> dict[str, Any]:
    return _config(registry, name, None)


@router.get("/models/{name}/versions/{version}/config",
            summary="Model configuration, one version (Triton extension)")
async def version_config(name: str, version: str, _: ReaderDep, registry: RegistryDep) -> dict[str, Any]:
    return _config(registry, name, version)


@router.get("/models/{name}/stats", summary="Statistics of a model's versions (Triton extension)")
async def stats(name: str, request: Request, _: ReaderDep, registry: RegistryDep) -> dict[str, Any]:
    return await _statistics(request, registry.versions(name), name)


@router.get("/models/{name}/versions/{version}/stats",
            summary="Statistics of one version (Triton extension)")
async def version_stats(
    name: str, version: str, request: Request, _: ReaderDep, registry: RegistryDep
) -> dict[str, Any]:
    return await _statistics(request, [registry.get(name, _number(name, version))], name)


@router.post("/repository/index", summary="Stored versions and their state (Triton extension)")
async def index(request: Request, _: ReaderDep, registry: RegistryDep) -> list[dict[str, str]]:
    ready = (await _body(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequestError('"ready" must be true or false')
    return triton.repository_index(registry.index(), ready)


@router.post("/repository/models/{name}/load",
             summary="Serve every stored version of a model (Triton extension); admin")
async def load(name: str, request: Request, _: AdminDep, registry: RegistryDep) -> dict[str, Any]:
    check_load_parameters((await _body(request)).get("parameters"))
    await registry.load(name)
    return {}


@router.post("/repository/models/{name}/unload",
             summary="Stop serving a model, keeping it stored (Triton extension); admin")
async def unload(name: str, request: Request, _: AdminDep, registry: RegistryDep) -> dict[str, Any]:
    await _body(request)
    await registry.unload(name)
    return {}
