"""Observability: Prometheus exposition and per-version latency statistics."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

from app.api.deps import MetricsDep, ReaderDep, RegistryDep
from app.api.schemas import ModelStats
from app.errors import NotFoundError
from app.telemetry import federation, group_stats
from app.telemetry.prometheus import Metrics, version_stats
from app.telemetry.stats import WINDOW_S

router = APIRouter(tags=["observability"])

_DISABLED = "metrics are switched off on this server (SCRIPTSERVE_METRICS_ENABLED=false)"


def _enabled(metrics: Metrics | None) -> Metrics:
    if metrics is None:
        raise NotFoundError(_DISABLED)
    return metrics


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format; OpenMetrics when the scraper asks for it)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {
        "type": "string", "description": "Prometheus text exposition format 0.0.4"}}}},
        404: {"description": "metrics are off"}},
)
async def prometheus_metrics(
    request: Request, _: ReaderDep, metrics: MetricsDep,
    scope: Literal["server", "worker"] = "server",
) -> Response:
    """With ``--workers``, the whole server's numbers (``scope=worker``: this worker's only)."""
    # Rendered on the event loop: serving numbers are written there or under a short lock,
    # and a scrape of a few models takes well under a millisecond.
    settings = request.app.state.settings
    if settings.worker_dir is None or scope == "worker":
        body, content_type = _enabled(metrics).render(request.headers.get("accept"))
        return Response(body, media_type=content_type)
    own = _enabled(metrics).render(None)[0]
    auth = {"Authorization": request.headers["authorization"]} if "authorization" in request.headers else {}
    siblings, missing = await federation.gather(settings.worker_dir, settings.worker_index, auth)
    body = federation.render(own.decode(), siblings, missing, federation.restarts(settings.worker_dir))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def forwarded_auth(request: Request) -> dict[str, str]:
    """The caller's credentials, for the siblings asked on its behalf."""
    return {"Authorization": request.headers["authorization"]} if "authorization" in request.headers else {}


@router.get(
    "/models/{name}/stats",
    summary="Latency, throughput and batching of each version: recent window and since start",
    responses={404: {"description": "no such model, or metrics are off"}},
)
async def model_stats(
    name: str, request: Request, _: ReaderDep, registry: RegistryDep, metrics: MetricsDep,
    scope: Literal["server", "worker"] = "server",
) -> ModelStats:
    """With ``--workers``, every worker's requests merged (``scope=worker``: this worker's only)."""
    _enabled(metrics)
    settings = request.app.state.settings
    mvs = [mv for mv in registry.versions(name) if version_stats(mv) is not None]
    run_dir = None if scope == "worker" else settings.worker_dir
    group = await group_stats.gather(run_dir, settings.worker_index, mvs, name, forwarded_auth(request))
    versions = []
    for mv in mvs:
        key = (mv.name, mv.version)
        versions.append({
            "version": mv.version,
            "queue_depth": group.queue_depth[key],
            "batching_enabled": mv.batcher.state.enabled,
            **group.stats[key].snapshot(),
        })
    return ModelStats.model_validate({"name": name, "window_s": WINDOW_S, "versions": versions,
                                      "workers": group.workers, "workers_missing": group.missing})


@router.get("/worker/stats", include_in_schema=False)
async def worker_stats(
    _: ReaderDep, registry: RegistryDep, metrics: MetricsDep, name: str | None = None
) -> dict[str, Any]:
    """This worker's raw statistics (buckets and events), for the sibling merging them."""
    _enabled(metrics)
    mvs = registry.all_versions() if name is None else registry.versions(name)
    return {"versions": group_stats.local_parts(mvs)}
