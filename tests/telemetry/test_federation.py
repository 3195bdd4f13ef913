"""The worker group's exposition: real collectors of two servers' numbers, merged."""

from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from app.cli.workers import threads_per_worker
from app.config import Settings
from app.telemetry import federation


def exposition(requests: int, in_flight: int, last_sync: float, served: int, latency: float) -> str:
    registry = CollectorRegistry()
    Counter("scriptserve_requests", "answered", ["model"], registry=registry).labels("m").inc(requests)
    Gauge("scriptserve_requests_in_flight", "now", ["model"], registry=registry).labels("m").set(in_flight)
    Gauge("scriptserve_store_last_sync_timestamp_seconds", "last", registry=registry).set(last_sync)
    Gauge("scriptserve_store_versions_served", "served", ["model"], registry=registry).labels("m").set(served)
    Histogram("scriptserve_request_duration_seconds", "time", buckets=(0.01, 0.1),
              registry=registry).observe(latency)
    return generate_latest(registry).decode()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def test_counters_histograms_and_held_gauges_add_up_and_the_laggard_shows():
    a = exposition(requests=5, in_flight=2, last_sync=1000.0, served=2, latency=0.005)
    b = exposition(requests=7, in_flight=1, last_sync=900.0, served=1, latency=0.05)
    merged = samples(federation.render(a, [b], missing=1, restarted=3))
    m = (("model", "m"),)
    assert merged[("scriptserve_requests_total", m)] == 12
    assert merged[("scriptserve_requests_in_flight", m)] == 3
    assert merged[("scriptserve_store_last_sync_timestamp_seconds", ())] == 900.0  # the oldest
    assert merged[("scriptserve_store_versions_served", m)] == 1  # the worker that lags
    assert merged[("scriptserve_request_duration_seconds_bucket", (("le", "0.01"),))] == 1
    assert merged[("scriptserve_request_duration_seconds_bucket", (("le", "0.1"),))] == 2
    assert merged[("scriptserve_request_duration_seconds_count", ())] == 2
    assert merged[("scriptserve_request_duration_seconds_sum", ())] == pytest.approx(0.055)
    assert merged[("scriptserve_workers", ())] == 2
    assert merged[("scriptserve_workers_missing", ())] == 1
    assert merged[("scriptserve_worker_restarts_total", ())] == 3


def test_a_lone_exposition_passes_through_unchanged():
    a = exposition(requests=5, in_flight=2, last_sync=1000.0, served=2, latency=0.005)
    merged = samples(federation.render(a, [], missing=0, restarted=0))
    assert all(merged[key] == value for key, value in samples(a.encode()).items())


def test_workers_setting_takes_a_number_or_auto_and_threads_are_split(tmp_path):
    with pytest.raises(ValidationError):
        Settings(model_store=tmp_path, workers=0)
    cores = len(os.sched_getaffinity(0))
    assert Settings(model_store=tmp_path, workers="auto").worker_count() == cores
    assert Settings(model_store=tmp_path, workers=3).worker_count() == 3
    assert threads_per_worker(Settings(model_store=tmp_path), 2) == max(1, cores // 2)
    assert threads_per_worker(Settings(model_store=tmp_path, torch_threads=3), 2) == 3
