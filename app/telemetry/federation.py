"""One set of numbers for a worker group: the worker answering ``/metrics`` adds its siblings'.

Each worker of ``scriptserve serve --workers N`` listens on ``<run dir>/worker-<i>.sock``. A
scrape reaches one worker; it asks every sibling for its own families (``?scope=worker``)
over that socket, in parallel and with a short timeout, and merges them sample by sample:
counters and histograms add up, as do gauges of things each worker holds (requests in
flight, queue depth, memory); a few gauges take the worst or the common value (the oldest
last sync, the newest start). A sibling that does not answer in time is left out and
counted in ``scriptserve_workers_missing``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

RESTARTS_FILE = "restarts.json"
SIBLING_TIMEOUT_S = 2.0

MINIMUM = frozenset({
    "scriptserve_store_last_sync_timestamp_seconds",  # the replica that lags shows
    "scriptserve_store_versions_served",
    "process_start_time_seconds",
})
MAXIMUM = frozenset({
    "scriptserve_store_sync_duration_seconds",
    "scriptserve_store_versions_known",
    "scriptserve_store_versions_failed",
    "scriptserve_model_versions_loaded",  # every worker loads every version
    "process_max_fds",
    "python_info",
})


def worker_socket_path(run_dir: Path, index: int) -> Path:
    return run_dir / f"worker-{index}.sock"


def sibling_sockets(run_dir: Path, own_index: int) -> list[Path]:
    own = worker_socket_path(run_dir, own_index)
    return sorted(p for p in run_dir.glob("worker-*.sock") if p != own)


def restarts(run_dir: Path) -> int:
    """Worker restarts the supervisor of ``run_dir`` has made."""
    try:
        return int(json.loads((run_dir / RESTARTS_FILE).read_text())["restarts"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


async def _scrape(path: Path, headers: dict[str, str]) -> str:
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker",
                                 timeout=SIBLING_TIMEOUT_S) as client:
        response = await client.get("/metrics", params={"scope": "worker"}, headers=headers)
        response.raise_for_status()
        return response.text


async def gather(run_dir: Path, own_index: int, headers: dict[str, str]) -> tuple[list[str], int]:
    """The siblings' expositions, and how many did not answer."""
    paths = sibling_sockets(run_dir, own_index)
    answers = await asyncio.gather(*(_scrape(p, headers) for p in paths), return_exceptions=True)
    texts = [a for a in answers if isinstance(a, str)]
    return texts, len(paths) - len(texts)


def _combine(family: str, sample: str, old: float, new: float) -> float:
    if family in MINIMUM or sample.endswith("_created"):
        return min(old, new)
    if family in MAXIMUM:
        return max(old, new)
    return old + new


def merge(texts: Iterable[str]) -> list[Metric]:
    """Families of several expositions of the same server code, merged sample by sample."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            seen = values[family.name]
            for s in family.samples:
                key = (s.name, tuple(s.labels.items()))
                old = seen.get(key)
                seen[key] = s.value if old is None else _combine(family.name, s.name, old, s.value)
    for name, metric in merged.items():
        for (sample, labels), value in values[name].items():
            metric.add_sample(sample, dict(labels), value)
    return list(merged.values())


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render(own: str, siblings: list[str], missing: int, restarted: int) -> bytes:
    """The group's exposition (Prometheus text format 0.0.4)."""
    families = merge([own, *siblings])
    families.append(GaugeMetricFamily(
        "scriptserve_workers", "Worker processes whose numbers this scrape includes.",
        1 + len(siblings)))
    families.append(GaugeMetricFamily(
        "scriptserve_workers_missing", "Workers that did not answer this scrape in time.", missing))
    families.append(CounterMetricFamily(
        "scriptserve_worker_restarts", "Workers the supervisor restarted after they died.",
        restarted))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)
