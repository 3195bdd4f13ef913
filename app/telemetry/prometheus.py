"""Prometheus collectors on an injected ``CollectorRegistry`` (never the global one).

Serving numbers (request, queue and inference time, batch sizes, queue depth) are kept by each
version's ``VersionStats`` and turned into metric families at scrape time by
``ServingCollector``: the predict path pays for a bisect and an increment, not for
prometheus_client's locked children. Rare events (uploads, loads, compilations) use ordinary
prometheus_client counters and histograms.

Label values are bounded: model and version label only versions that are loaded now (a deleted
version's series disappear at the next scrape), and every other label takes a fixed set of
values (status, reason codes of the exception family, device names).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator

import torch
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector

from app.errors import ScriptServeError
from app.serving.registry import ModelVersion, Registry
from app.telemetry.stats import BATCH_BOUNDS, GRID, STATUSES, VersionStats

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
"""Request, queue and inference time: 100 us to a minute (each is an edge of ``stats.GRID``)."""
SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Model load and compilation time: 50 ms to 10 minutes."""
COMPILE_METHODS = frozenset({"script", "trace", "auto"})

_EDGES = [GRID.index(b) for b in LATENCY_BUCKETS]  # ValueError at import if one is off-grid
_LE = [repr(b) for b in LATENCY_BUCKETS]
_BATCH_LE = [str(float(b)) for b in BATCH_BOUNDS]


def failure_reason(exc: BaseException) -> str:
    """A bounded label value for a failure: the error code of the exception family."""
    if isinstance(exc, ScriptServeError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "internal_error"


class Metrics:
    """Every collector of one app, on one ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.uploads = Counter(
            "scriptserve_uploads", "Model uploads that reached the upload handler.", registry=r)
        self.upload_failures = Counter(
            "scriptserve_upload_failures", "Failed model uploads, by error code.",
            ["reason"], registry=r)
        self.compilations = Counter(
            "scriptserve_compilations", "Eager-to-TorchScript compilations started, by method.",
            ["method"], registry=r)
        self.compilation_failures = Counter(
            "scriptserve_compilation_failures", "Failed compilations, by error code.",
            ["reason"], registry=r)
        self.compilation_duration = Histogram(
            "scriptserve_compilation_duration_seconds", "Time to compile an eager model.",
            buckets=SLOW_BUCKETS, registry=r)
        self.load_duration = Histogram(
            "scriptserve_model_load_duration_seconds",
            "Time to load a TorchScript archive onto its device (successful loads).",
            buckets=SLOW_BUCKETS, registry=r)
        self.load_failures = Counter(
            "scriptserve_model_load_failures", "Archives that failed to load, by error code.",
            ["reason"], registry=r)
        self.host_restarts = Counter(
            "scriptserve_model_host_restarts",
            "Model host processes restarted after they died or were killed, by reason "
            "(timeout: a load or forward past its limit; crashed: the host died; memory: recycled "
            "after a call ran out of memory).",
            ["reason"], registry=r)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)  # collections matter here: see gc_freeze in app/config.py

    # wiring --------------------------------------------------------------------------------
    def stats_for(self, name: str, version: int) -> VersionStats:
        """Observer factory for the registry: one ``VersionStats`` per served version."""
        return VersionStats(name, version)

    def watch(self, models: Registry) -> None:
        """Export the serving numbers of every version ``models`` holds."""
        self.registry.register(ServingCollector(models.all_versions))
        self.registry.register(QuarantineCollector(models))

    def record_host_restart(self, label: str, reason: str) -> None:
        """For the model hosts: one call per restart."""
        self.host_restarts.labels(reason if reason in ("timeout", "crashed", "memory") else "other").inc()

    # events --------------------------------------------------------------------------------
    def observe_load(self, seconds: float, error: BaseException | None) -> None:
        if error is None:
            self.load_duration.observe(seconds)
        else:
            self.load_failures.labels(failure_reason(error)).inc()

    def record_upload(self, error: BaseException | None) -> None:
        self.uploads.inc()
        if error is not None:
            self.upload_failures.labels(failure_reason(error)).inc()

    def record_compilation(self, method: str, seconds: float, error: BaseException | None) -> None:
        """For the compiler: one call per compilation, successful or not."""
        self.compilations.labels(method if method in COMPILE_METHODS else "other").inc()
        if error is None:
            self.compilation_duration.observe(seconds)
        else:
            self.compilation_failures.labels(failure_reason(error)).inc()

    # exposition ----------------------------------------------------------------------------
    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body in the format the scraper asked for, and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def version_stats(mv: ModelVersion) -> VersionStats | None:
    observer = mv.batcher.observer
    return observer if isinstance(observer, VersionStats) else None


class QuarantineCollector:
    """How many stored versions are quarantined here (they fail to load: docs/isolation.md)."""

    def __init__(self, models: Registry) -> None:
        self.models = models

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "scriptserve_quarantined_versions",
            "Versions not loaded because their loads failed, hung or killed their host twice; "
            "an admin lifts it (POST /models/{name}/versions/{v}/retry).")
        gauge.add_metric([], len(self.models.quarantine))
        yield gauge


class ServingCollector:
    """Builds the per-version families from ``VersionStats`` at scrape time."""

    def __init__(self, versions: Callable[[], Iterable[ModelVersion]]) -> None:
        self.versions = versions

    def describe(self) -> Iterable[Metric]:
        return []  # families are known only at collect time; nothing to check at register

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        request = HistogramMetricFamily(
            "scriptserve_request_duration_seconds",
            "Prediction time end to end in the server (first byte in to last byte out).",
            labels=[*labels, "status"])
        queue = HistogramMetricFamily(
            "scriptserve_queue_duration_seconds",
            "Time a request waited for its batch to start (executed requests).", labels=labels)
        inference = HistogramMetricFamily(
            "scriptserve_inference_duration_seconds",
            "Time of the forward pass a request was part of (executed requests).", labels=labels)
        batch = HistogramMetricFamily(
            "scriptserve_batch_size", "Samples per executed forward pass.", labels=labels)
        requests = CounterMetricFamily(
            "scriptserve_requests", "Answered prediction requests, by status.",
            labels=[*labels, "status"])
        executions = CounterMetricFamily(
            "scriptserve_batch_executions", "Forward passes that returned outputs.", labels=labels)
        samples = CounterMetricFamily(
            "scriptserve_batch_samples", "Samples run through successful forward passes.",
            labels=labels)
        depth = GaugeMetricFamily(
            "scriptserve_queue_depth", "Requests waiting for a forward pass.", labels=labels)
        in_flight = GaugeMetricFamily(
            "scriptserve_requests_in_flight", "Prediction requests inside the server now.",
            labels=labels)
        memory = GaugeMetricFamily(
            "scriptserve_model_memory_bytes",
            "Bytes of parameters and buffers, on the version's device (cpu: host memory).",
            labels=[*labels, "device"])
        loaded = 0
        for mv in self.versions():
            stats = version_stats(mv)
            if stats is None:
                continue
            loaded += 1
            key = [mv.name, str(mv.version)]
            for status, hist in zip(STATUSES, stats.requests):
                buckets, total = hist.cumulative(_EDGES)
                request.add_metric([*key, status], _buckets(_LE, buckets, total), hist.sum)
                requests.add_metric([*key, status], total)
            for family, hist in ((queue, stats.queue), (inference, stats.inference)):
                buckets, total = hist.cumulative(_EDGES)
                family.add_metric(key, _buckets(_LE, buckets, total), hist.sum)
            sizes, runs = stats.batches.cumulative()
            batch.add_metric(key, _buckets(_BATCH_LE, sizes, runs), stats.batches.sum)
            executions.add_metric(key, runs)
            samples.add_metric(key, stats.batches.sum)
            depth.add_metric(key, mv.batcher.queue_depth)
            in_flight.add_metric(key, stats.in_flight)
            if stats.memory_bytes is None:
                stats.memory_bytes = mv.model.parameter_bytes()
            memory.add_metric([*key, str(mv.model.device)], stats.memory_bytes)
        versions = GaugeMetricFamily(
            "scriptserve_model_versions_loaded", "Model versions loaded and serving.", loaded)
        yield from (request, queue, inference, batch, requests, executions, samples, depth,
                    in_flight, memory, versions)
        yield from _cuda_families()


def _buckets(les: list[str], cumulative: list[int], total: int) -> list[tuple[str, float]]:
    return [*zip(les, cumulative), ("+Inf", total)]


def _cuda_families() -> Iterator[Metric]:
    """Allocator numbers per CUDA device, once CUDA is in use (a scrape never initialises it)."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    allocated = GaugeMetricFamily(
        "scriptserve_cuda_memory_allocated_bytes", "Bytes held by tensors on a CUDA device.",
        labels=["device"])
    reserved = GaugeMetricFamily(
        "scriptserve_cuda_memory_reserved_bytes",
        "Bytes reserved by the CUDA caching allocator on a device.", labels=["device"])
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        allocated.add_metric([device], torch.cuda.memory_allocated(index))
        reserved.add_metric([device], torch.cuda.memory_reserved(index))
    yield allocated
    yield reserved
