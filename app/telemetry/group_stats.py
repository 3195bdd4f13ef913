"""Statistics of a whole worker group: ``/models/{name}/stats`` and Triton's statistics.

Each worker of ``scriptserve serve --workers N`` answers ``GET /worker/stats`` on its unix
socket (``<run dir>/worker-<i>.sock``, as for ``/metrics``) with the raw numbers behind its
statistics: histogram buckets, counts, sums and the recent window's events, never
percentiles. The worker answering a client asks every sibling in parallel, with a short
timeout, and merges them per version (``VersionStats.merged``): counts add, buckets add, so a
percentile since start is that of every request (within a bucket's 5%) and the window's
percentiles are exact over all workers' events. A sibling that does not answer in time is
left out and counted as missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from app.telemetry.federation import SIBLING_TIMEOUT_S, sibling_sockets
from app.telemetry.stats import VersionStats
from app.wire import triton

if TYPE_CHECKING:
    from app.config import Settings
    from app.serving.model_version import ModelVersion

Key = tuple[str, int]


def local_parts(mvs: Iterable[ModelVersion]) -> list[dict[str, Any]]:
    """This worker's ``/worker/stats`` answer for these versions."""
    out = []
    for mv in mvs:
        stats = mv.batcher.observer
        if isinstance(stats, VersionStats):
            out.append({"name": mv.name, "version": mv.version,
                        "queue_depth": mv.batcher.queue_depth, "stats": stats.export()})
    return out


async def _ask(path: Path, name: str | None, headers: dict[str, str]) -> list[dict[str, Any]]:
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker",
                                 timeout=SIBLING_TIMEOUT_S) as client:
        params = {"name": name} if name is not None else {}
        response = await client.get("/worker/stats", params=params, headers=headers)
        response.raise_for_status()
        parts: list[dict[str, Any]] = response.json()["versions"]
        return parts


class GroupStats:
    """Every worker's numbers for some versions, merged; ``workers`` answered, ``missing`` did not."""

    def __init__(self, parts: list[dict[str, Any]], workers: int, missing: int) -> None:
        self.workers = workers
        self.missing = missing
        by_key: dict[Key, list[dict[str, Any]]] = {}
        self.queue_depth: dict[Key, int] = {}
        for part in parts:
            key = (part["name"], int(part["version"]))
            by_key.setdefault(key, []).append(part["stats"])
            self.queue_depth[key] = self.queue_depth.get(key, 0) + int(part["queue_depth"])
        self.stats = {key: VersionStats.merged(key[0], key[1], p) for key, p in by_key.items()}


async def gather(run_dir: Path | None, own_index: int, mvs: list[ModelVersion], name: str | None,
                 headers: dict[str, str]) -> GroupStats:
    """This worker's versions ``mvs`` merged with what its siblings know of them (all of
    ``name``'s versions; every version when ``name`` is None)."""
    own = local_parts(mvs)
    if run_dir is None:
        return GroupStats(own, 1, 0)
    paths = sibling_sockets(run_dir, own_index)
    answers = await asyncio.gather(*(_ask(p, name, headers) for p in paths), return_exceptions=True)
    wanted = {(mv.name, mv.version) for mv in mvs}
    parts = list(own)
    answered = 0
    for answer in answers:
        if isinstance(answer, list):
            answered += 1
            parts.extend(p for p in answer if (p["name"], int(p["version"])) in wanted)
    return GroupStats(parts, 1 + answered, len(paths) - answered)


async def triton_statistics(settings: Settings, mvs: list[ModelVersion], name: str | None,
                            headers: dict[str, str]) -> dict[str, Any]:
    """Triton's statistics of ``mvs`` for the whole worker group (HTTP and gRPC)."""
    if settings.worker_dir is None:
        return triton.statistics(mvs)
    group = await gather(settings.worker_dir, settings.worker_index, mvs, name, headers)
    return triton.statistics(mvs, group.stats)
