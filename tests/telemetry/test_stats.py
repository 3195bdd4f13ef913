"""Bounded latency statistics: exact window percentiles, since-start within bucket resolution."""

from __future__ import annotations

import random

import numpy as np
import pytest

from app.serving.batching import Job
from app.telemetry.prometheus import LATENCY_BUCKETS
from app.telemetry.stats import (
    CLIENT_ERROR,
    GRID,
    OK,
    REJECTED,
    SERVER_ERROR,
    WINDOW_CAPACITY,
    LatencyHistogram,
    VersionStats,
    status_index,
)


def lognormal(n: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(-5.0, 1.0) for _ in range(n)]  # ~7 ms median, long tail


def numpy_summary(values: list[float]) -> dict[str, float]:
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": p50, "p90": p90, "p99": p99, "max": max(values)}


def record(stats: VersionStats, durations: list[float], status: int = OK) -> None:
    now = stats.started
    for d in durations:
        now += 0.001
        stats.record_request(d, status, now)


def test_grid_is_fine_and_holds_every_prometheus_edge():
    assert all(b in GRID for b in LATENCY_BUCKETS)
    widths = [hi / lo - 1 for lo, hi in zip(GRID, GRID[1:])]
    assert max(widths) <= 0.05 + 1e-9
    assert GRID[0] == 1e-6 and GRID[-1] == 1e4 and list(GRID) == sorted(GRID)


@pytest.mark.parametrize(
    ("code", "status"),
    [(200, OK), (204, OK), (400, CLIENT_ERROR), (404, CLIENT_ERROR), (422, CLIENT_ERROR),
     (500, SERVER_ERROR), (504, SERVER_ERROR), (503, REJECTED)],
)
def test_status_classes(code, status):
    assert status_index(code) == status


def test_window_percentiles_match_the_recorded_latencies_exactly():
    stats = VersionStats("m", 1)
    values = lognormal(500)
    record(stats, values)
    window = stats.snapshot(now=stats.started + 1.0)["window"]
    assert window["requests"] == 500 and window["errors"] == 0
    for key, expected in numpy_summary(values).items():
        assert window["request_s"][key] == pytest.approx(expected, rel=1e-12)


def test_since_start_percentiles_are_within_the_bucket_width():
    stats = VersionStats("m", 1)
    values = lognormal(5000, seed=1)
    record(stats, values)
    total = stats.snapshot(now=stats.started + 10.0)["total"]
    assert total["requests"] == 5000
    expected = numpy_summary(values)
    assert total["request_s"]["max"] == expected["max"]
    for key in ("p50", "p90", "p99"):
        assert total["request_s"][key] == pytest.approx(expected[key], rel=0.05)


def test_histogram_quantiles_of_a_few_values_interpolate_between_ranks():
    hist = LatencyHistogram()
    values = [0.004, 0.011, 0.012, 0.013, 0.2]
    for v in values:
        hist.observe(v)
    for q in (0.5, 0.9, 0.99):
        assert hist.quantile(q) == pytest.approx(float(np.percentile(values, q * 100)), rel=0.05)
    assert hist.quantile(0.0) == 0.004 and hist.quantile(1.0) == 0.2


def test_the_window_is_bounded_and_keeps_the_latest_events():
    stats = VersionStats("m", 1)
    values = lognormal(3 * WINDOW_CAPACITY, seed=2)
    record(stats, values)
    snap = stats.snapshot(now=stats.started + 20.0)
    window, total = snap["window"], snap["total"]
    assert window["requests"] == WINDOW_CAPACITY
    assert total["requests"] == len(values)
    latest = values[-WINDOW_CAPACITY:]
    assert window["request_s"]["p99"] == pytest.approx(np.percentile(latest, 99), rel=1e-12)
    # the window starts at the oldest event still held: 1 ms apart
    assert window["span_s"] == pytest.approx(20.0 - 0.001 * (2 * WINDOW_CAPACITY + 1), abs=1e-6)
    assert all(len(h.counts) == len(GRID) + 1 for h in stats.requests)


def test_old_events_leave_the_window_but_stay_in_the_totals():
    stats = VersionStats("m", 1, window_s=60.0)
    record(stats, [0.01] * 10)
    record(stats, [0.02] * 3, status=SERVER_ERROR)
    snap = stats.snapshot(now=stats.started + 120.0)
    assert snap["window"]["requests"] == 0 and snap["window"]["request_s"]["p50"] is None
    assert snap["total"]["requests"] == 13 and snap["total"]["errors"] == 3
    assert snap["total"]["by_status"] == {"ok": 10, "client_error": 0, "server_error": 3,
                                          "rejected": 0}
    assert snap["total"]["throughput_rps"] == pytest.approx(10 / 120.0)


def test_error_latencies_do_not_enter_the_request_percentiles():
    stats = VersionStats("m", 1)
    record(stats, [0.010, 0.020, 0.030])
    record(stats, [5.0], status=CLIENT_ERROR)
    window = stats.snapshot(now=stats.started + 1.0)["window"]
    assert window["request_s"]["max"] == 0.030
    assert window["errors"] == 1 and window["by_status"]["client_error"] == 1


def make_job(enqueued_at: float, started_at: float, finished_at: float, size: int) -> Job:
    job = Job(inputs=[], rows=1, key=None, future=None, loop=None,  # type: ignore[arg-type]
              enqueued_at=enqueued_at, deadline=enqueued_at + 30)
    job.started_at, job.finished_at, job.batch_size = started_at, finished_at, size
    return job


def test_batch_observer_records_each_job_and_each_batch_once():
    stats = VersionStats("m", 1)
    t = stats.started
    waits, inference, sizes = [], [], []
    for b in range(50):
        start, end = t + b + 0.5, t + b + 0.5 + 0.001 * (b + 1)
        jobs = [make_job(start - 0.0001 * (i + 1), start, end, 3) for i in range(b % 4 + 1)]
        stats(jobs, end - start)
        waits += [j.started_at - j.enqueued_at for j in jobs]
        inference += [end - start] * len(jobs)
        sizes.append(3)
    snap = stats.snapshot(now=t + 55.0)
    for part in ("window", "total"):
        assert snap[part]["executions"] == 50
        assert snap[part]["mean_batch_size"] == 3.0
    window = snap["window"]
    for key, expected in numpy_summary(waits).items():
        assert window["queue_s"][key] == pytest.approx(expected, rel=1e-9)
    for key, expected in numpy_summary(inference).items():
        assert window["inference_s"][key] == pytest.approx(expected, rel=1e-9)
    assert stats.queue.count == len(waits) == stats.inference.count
    assert stats.batches.sum == 150


def test_merged_workers_equal_one_version_that_saw_every_request():
    """Two workers' exports, merged, give what one process recording both would: the same
    counts and buckets since start, exact window percentiles over both, through JSON."""
    import json

    one, two, both = VersionStats("m", 1), VersionStats("m", 1), VersionStats("m", 1)
    two.started = both.started = one.started
    first, second = lognormal(700, seed=2), lognormal(300, seed=3)
    record(one, first)
    record(two, second)
    record(both, first)
    record(both, second)
    record(two, [0.5, 0.25], CLIENT_ERROR)
    record(both, [0.5, 0.25], CLIENT_ERROR)
    t = one.started
    jobs = [make_job(t + 0.1, t + 0.2, t + 0.3, 2), make_job(t + 0.15, t + 0.2, t + 0.3, 2)]
    one(jobs, 0.1)
    both(jobs, 0.1)
    now = t + 5.0
    parts = [json.loads(json.dumps(s.export(now))) for s in (one, two)]
    merged = VersionStats.merged("m", 1, parts)
    got, want = merged.snapshot(now), both.snapshot(now)
    for period in ("window", "total"):
        for key in ("requests", "errors", "by_status", "executions", "mean_batch_size"):
            assert got[period][key] == want[period][key], (period, key)
        for key in ("request_s", "queue_s", "inference_s"):
            for q, value in want[period][key].items():
                assert got[period][key][q] == pytest.approx(value, rel=1e-9), (period, key, q)
    window = got["window"]["request_s"]
    for key, expected in numpy_summary(first + second).items():
        assert window[key] == pytest.approx(expected, rel=1e-12)
    cumulative, expected = merged.cumulative(), both.cumulative()
    assert cumulative.pop("last_inference_ms") >= expected.pop("last_inference_ms") - 1000
    assert cumulative == expected
    assert [h.counts for h in merged.requests] == [h.counts for h in both.requests]


def test_merged_window_keeps_events_from_before_a_later_worker_started():
    """A worker that began serving the version later missed nothing before it began: the
    merged window still holds the earlier worker's events. A worker whose ring forgot events
    does cut the window, at its oldest kept event."""
    import json

    early, late = VersionStats("m", 1), VersionStats("m", 1)
    late.started = early.started + 2.0
    record(early, [0.01] * 5)  # at started + 1..5 ms, before `late` existed
    for i in range(3):
        late.record_request(0.02, OK, late.started + 0.1 * (i + 1))
    now = late.started + 1.0
    merged = VersionStats.merged("m", 1, [json.loads(json.dumps(s.export(now))) for s in (early, late)])
    window = merged.snapshot(now)["window"]
    assert window["requests"] == 8 and window["span_s"] == pytest.approx(3.0)

    small = VersionStats("m", 1, capacity=4)
    small.started = early.started
    for i in range(6):  # the ring keeps the last 4: the first two are forgotten
        small.record_request(0.03, OK, small.started + 0.5 + 0.1 * i)
    parts = [json.loads(json.dumps(s.export(now))) for s in (early, small)]
    window = VersionStats.merged("m", 1, parts).snapshot(now)["window"]
    assert window["span_s"] == pytest.approx(now - (small.started + 0.7))
    assert window["requests"] == 4  # `early`'s events came before the cut
