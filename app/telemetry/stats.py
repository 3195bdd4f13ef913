"""Per-version latency numbers in bounded structures: fine histograms since start, rings for now.

One ``VersionStats`` per served model version is both the batcher's observer (called once per
executed batch, on the inference thread) and the sink of end-to-end request timings (called by
the request middleware, on the event loop). ``app.telemetry.prometheus`` exposes the same numbers to
Prometheus, so ``/metrics`` and ``GET /models/{name}/stats`` never disagree on a count.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

STATUSES = ("ok", "client_error", "server_error", "rejected")
OK, CLIENT_ERROR, SERVER_ERROR, REJECTED = range(4)

WINDOW_S = 60.0
"""The recent window of ``/stats``: the last minute, or the last ``WINDOW_CAPACITY`` events."""
WINDOW_CAPACITY = 2048


def _grid() -> tuple[float, ...]:
    """Bucket bounds from 1 us to 10 000 s, at most 5% wide, through round numbers.

    Round mantissas (1, 1.05, ..., 2, 2.1, ..., 4, 4.2, ..., 9.8) keep every usual Prometheus
    boundary (0.0005, 0.001, 0.0025, 0.005, ...) an exact edge of this grid.
    """
    mantissas = [*range(100, 200, 5), *range(200, 400, 10), *range(400, 1000, 20)]
    bounds = [float(f"{m}e{exp - 2}") for exp in range(-6, 4) for m in mantissas]
    return (*bounds, 1e4)


GRID = _grid()


def status_index(status_code: int) -> int:
    """Map an HTTP status to ok / client_error / server_error / rejected (503: load shed)."""
    if status_code < 400:
        return OK
    if status_code == 503:
        return REJECTED
    return CLIENT_ERROR if status_code < 500 else SERVER_ERROR


class LatencyHistogram:
    """Counts per ``GRID`` bucket, plus exact count, sum, min and max (seconds)."""

    __slots__ = ("counts", "sum", "min", "max")

    def __init__(self) -> None:
        self.counts = [0] * (len(GRID) + 1)  # last: above 10 000 s
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(GRID, value)] += n
        self.sum += value * n
        if value > self.max:
            self.max = value
        if value < self.min:
            self.min = value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self, edges: Sequence[int]) -> tuple[list[int], int]:
        """Counts at or below ``GRID[i]`` for each index in ``edges``, and the total."""
        running = list(itertools.accumulate(list(self.counts)))  # one consistent copy
        return [running[i] for i in edges], running[-1]

    def quantile(self, q: float) -> float | None:
        """Estimate the ``q`` quantile (linear between ranks, like numpy); within one bucket."""
        counts = list(self.counts)
        total = sum(counts)
        if total == 0:
            return None
        position = q * (total - 1)
        lo = math.floor(position)
        low = self._ranked(counts, lo, total)
        high = self._ranked(counts, lo + 1, total) if lo + 1 < total else low
        return low + (high - low) * (position - lo)

    def _ranked(self, counts: list[int], rank: int, total: int) -> float:
        """Estimate the ``rank``-th smallest value: its bucket's samples spread evenly."""
        if rank == 0:
            return self.min
        if rank == total - 1:
            return self.max
        seen = 0
        for i, c in enumerate(counts):
            if seen + c > rank:
                lower = GRID[i - 1] if i > 0 else 0.0
                upper = GRID[i] if i < len(GRID) else self.max
                value = lower + (upper - lower) * (rank - seen + 0.5) / c
                return min(max(value, self.min), self.max)
            seen += c
        return self.max


BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class BatchSizeHistogram:
    """Samples per executed batch: counts per power-of-two bucket, and the exact sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BATCH_BOUNDS) + 1)
        self.sum = 0

    def observe(self, size: int) -> None:
        self.counts[bisect_left(BATCH_BOUNDS, size)] += 1
        self.sum += size

    def cumulative(self) -> tuple[list[int], int]:
        running = list(itertools.accumulate(list(self.counts)))
        return running[:-1], running[-1]


class Ring:
    """The last ``capacity`` events: a time and two numbers each, in preallocated arrays."""

    __slots__ = ("capacity", "ts", "a", "b", "next", "full")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ts = array("d", bytes(8 * capacity))
        self.a = array("d", bytes(8 * capacity))
        self.b = array("d", bytes(8 * capacity))
        self.next = 0
        self.full = False

    def push(self, ts: float, a: float, b: float = 0.0) -> None:
        i = self.next
        self.ts[i] = ts
        self.a[i] = a
        self.b[i] = b
        i += 1
        if i == self.capacity:
            i = 0
            self.full = True
        self.next = i

    @property
    def oldest(self) -> float:
        return self.ts[self.next] if self.full else self.ts[0]

    def events(self, start: float) -> list[tuple[float, float, float]]:
        """(time, a, b) of the events held that happened at or after ``start``."""
        ts, cap = self.ts, self.capacity
        order = range(self.next, self.next + cap) if self.full else range(self.next)
        return [(ts[i % cap], self.a[i % cap], self.b[i % cap]) for i in order if ts[i % cap] >= start]

    def since(self, start: float) -> tuple[list[float], list[float]]:
        """Both columns of the events held that happened at or after ``start``, oldest first."""
        ts, cap = self.ts, self.capacity
        order = range(self.next, self.next + cap) if self.full else range(self.next)
        keep = [i % cap for i in order if ts[i % cap] >= start]
        return [self.a[i] for i in keep], [self.b[i] for i in keep]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = q * (len(sorted_values) - 1)
    lo = math.floor(position)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (position - lo)


def summary(values: list[float]) -> dict[str, float | None]:
    """p50 / p90 / p99 / max of exact values (None when empty)."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
    }


def histogram_summary(hist: LatencyHistogram) -> dict[str, float | None]:
    """p50 / p90 / p99 (within 5%) and the exact max of a histogram."""
    if hist.count == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    return {
        "p50": hist.quantile(0.50),
        "p90": hist.quantile(0.90),
        "p99": hist.quantile(0.99),
        "max": hist.max,
    }


class VersionStats:
    """Everything measured for one model version; bounded whatever the traffic."""

    def __init__(
        self, name: str, version: int, window_s: float = WINDOW_S, capacity: int = WINDOW_CAPACITY
    ) -> None:
        self.name = name
        self.version = version
        self.window_s = window_s
        self.started = time.monotonic()
        self.requests = [LatencyHistogram() for _ in STATUSES]  # by status index
        self.queue = LatencyHistogram()
        self.inference = LatencyHistogram()
        self.batches = BatchSizeHistogram()
        self.in_flight = 0
        self.last_inference_ms = 0  # wall-clock time of the last batch (Triton's statistics)
        self.by_batch_size: dict[int, list[float]] = {}  # samples -> [executions, seconds]
        self.memory_bytes: int | None = None  # parameters + buffers, filled on first scrape
        self.window_floor = -math.inf  # merged stats: some part forgot the events before this
        # Batches are recorded by inference threads (maybe several per version), requests by
        # the event loop only; the lock is taken once per batch and by readers of the job side.
        self._lock = threading.Lock()
        self._request_ring = Ring(capacity)  # duration, status index
        self._job_ring = Ring(capacity)  # queue time, inference time
        self._batch_ring = Ring(capacity)  # samples

    # recording -----------------------------------------------------------------------------
    def __call__(self, jobs: Sequence[Any], inference_s: float) -> None:
        """Batch observer: one call per executed batch, from the inference thread."""
        first = jobs[0]
        end, size = first.finished_at, first.batch_size
        with self._lock:
            self.inference.observe(inference_s, len(jobs))
            self.batches.observe(size)
            self._batch_ring.push(end, size)
            self.last_inference_ms = int(time.time() * 1000)  # a timestamp, not a duration
            per_size = self.by_batch_size.setdefault(size, [0, 0.0])
            per_size[0] += 1
            per_size[1] += inference_s
            observe, push = self.queue.observe, self._job_ring.push
            for job in jobs:
                waited = job.started_at - job.enqueued_at
                observe(waited)
                push(end, waited, inference_s)

    def record_request(self, seconds: float, status: int, now: float) -> None:
        """One answered request, end to end in the server (event loop only)."""
        self.requests[status].observe(seconds)
        self._request_ring.push(now, seconds, status)

    # reading -------------------------------------------------------------------------------
    @property
    def executions(self) -> int:
        return sum(self.batches.counts)

    def cumulative(self) -> dict[str, Any]:
        """Counts and summed seconds since start, read consistently (Triton's statistics)."""
        with self._lock:
            return {
                "queue": (self.queue.count, self.queue.sum),
                "inference": (self.inference.count, self.inference.sum),
                "samples": self.batches.sum,
                "executions": self.executions,
                "by_batch_size": sorted((k, v[0], v[1]) for k, v in self.by_batch_size.items()),
                "last_inference_ms": self.last_inference_ms,
            }

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The recent window and the totals since this version started serving."""
        now = time.monotonic() if now is None else now
        return {
            "uptime_s": now - self.started,
            "in_flight": self.in_flight,
            "window": self._window(now),
            "total": self._total(now),
        }

    def _total(self, now: float) -> dict[str, Any]:
        by_status = {s: h.count for s, h in zip(STATUSES, self.requests)}
        with self._lock:
            queue, inference = histogram_summary(self.queue), histogram_summary(self.inference)
            executions, samples = self.executions, self.batches.sum
        uptime = max(now - self.started, 1e-9)
        return {
            "span_s": uptime,
            "requests": sum(by_status.values()),
            "errors": sum(by_status.values()) - by_status["ok"],
            "by_status": by_status,
            "throughput_rps": by_status["ok"] / uptime,
            "request_s": histogram_summary(self.requests[OK]),
            "queue_s": queue,
            "inference_s": inference,
            "executions": executions,
            "mean_batch_size": samples / executions if executions else None,
        }

    def _window_start(self, now: float) -> float:
        return max(now - self.window_s, self.started, self._forgotten_before())

    def _forgotten_before(self) -> float:
        """Events before this time may be missing: a full ring has forgotten older ones (or,
        merged, some worker's ring had)."""
        rings = (self._request_ring, self._job_ring, self._batch_ring)
        return max([self.window_floor, *(r.oldest for r in rings if r.full)])

    def _window(self, now: float) -> dict[str, Any]:
        with self._lock:
            start = self._window_start(now)
            durations, statuses = self._request_ring.since(start)
            waits, inferences = self._job_ring.since(start)
            sizes, _ = self._batch_ring.since(start)
        by_status = dict.fromkeys(STATUSES, 0)
        ok_durations = []
        for d, s in zip(durations, statuses):
            by_status[STATUSES[int(s)]] += 1
            if s == OK:
                ok_durations.append(d)
        span = max(now - start, 1e-9)
        return {
            "span_s": span,
            "requests": len(durations),
            "errors": len(durations) - by_status["ok"],
            "by_status": by_status,
            "throughput_rps": by_status["ok"] / span,
            "request_s": summary(ok_durations),
            "queue_s": summary(waits),
            "inference_s": summary(inferences),
            "executions": len(sizes),
            "mean_batch_size": sum(sizes) / len(sizes) if sizes else None,
        }

    # merging the workers of one server ------------------------------------------------------
    def export(self, now: float | None = None) -> dict[str, Any]:
        """Everything behind ``snapshot`` and ``cumulative`` as JSON: buckets, not percentiles.

        Times are ``time.monotonic()`` values: one clock for every process of a machine."""
        now = time.monotonic() if now is None else now
        with self._lock:
            start = self._window_start(now)
            return {
                "started": self.started,
                "in_flight": self.in_flight,
                "last_inference_ms": self.last_inference_ms,
                "requests": [_dump(h) for h in self.requests],
                "queue": _dump(self.queue),
                "inference": _dump(self.inference),
                "batches": {"counts": list(self.batches.counts), "sum": self.batches.sum},
                "by_batch_size": [[k, *v] for k, v in self.by_batch_size.items()],
                "forgotten_before": _finite(self._forgotten_before()),
                "request_events": self._request_ring.events(start),
                "job_events": self._job_ring.events(start),
                "batch_events": self._batch_ring.events(start),
            }

    @classmethod
    def merged(cls, name: str, version: int, parts: Sequence[dict[str, Any]]) -> VersionStats:
        """One version's statistics over several workers' ``export()``s.

        Counts and sums add, histogram buckets add (so percentiles since start are those of
        all requests, within a bucket's 5%), the recent window holds every worker's events
        and starts at the latest time before which some worker's ring forgot events (a worker
        that began serving the version later missed nothing before it began)."""
        capacity = WINDOW_CAPACITY * max(1, len(parts))
        out = cls(name, version, capacity=capacity)
        out.started = min((p["started"] for p in parts), default=out.started)
        for part in parts:
            out.in_flight += part["in_flight"]
            out.last_inference_ms = max(out.last_inference_ms, part["last_inference_ms"])
            for hist, dumped in zip(out.requests, part["requests"]):
                _load(hist, dumped)
            _load(out.queue, part["queue"])
            _load(out.inference, part["inference"])
            for i, count in enumerate(part["batches"]["counts"]):
                out.batches.counts[i] += count
            out.batches.sum += part["batches"]["sum"]
            for size, executions, seconds in part["by_batch_size"]:
                per_size = out.by_batch_size.setdefault(int(size), [0, 0.0])
                per_size[0] += executions
                per_size[1] += seconds
            if part["forgotten_before"] is not None:
                out.window_floor = max(out.window_floor, part["forgotten_before"])
            for ring, key in ((out._request_ring, "request_events"), (out._job_ring, "job_events"),
                              (out._batch_ring, "batch_events")):
                for ts, a, b in part[key]:
                    ring.push(ts, a, b)
        return out


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value  # JSON has no infinities


def _dump(hist: LatencyHistogram) -> dict[str, Any]:
    return {"buckets": [[i, c] for i, c in enumerate(hist.counts) if c], "sum": hist.sum,
            "min": None if hist.min == math.inf else hist.min, "max": hist.max}


def _load(hist: LatencyHistogram, dumped: dict[str, Any]) -> None:
    """Add a ``_dump``ed histogram into ``hist``."""
    for i, count in dumped["buckets"]:
        hist.counts[i] += count
    hist.sum += dumped["sum"]
    if dumped["min"] is not None:
        hist.min = min(hist.min, dumped["min"])
    hist.max = max(hist.max, dumped["max"])
