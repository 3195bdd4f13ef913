"""The load loop of ``scriptserve bench``: cheap enough that the server, not the client, is measured.

One request is encoded once; each connection is a raw HTTP/1.1 keep-alive socket that writes
those bytes and reads the answer's status line, headers and ``Content-Length`` body, with no
decoding of the outputs. Several worker processes (``--procs``) each run an event loop with
their share of the connections, and report how busy their CPU was: a worker near a full core
means the numbers are the client's limit.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LoadPlan:
    """What every worker sends, and its bounds."""

    url: str
    """Full URL of the prediction route."""
    body: bytes
    headers: dict[str, str]
    connections: int
    requests: int
    """Most requests this worker sends."""
    duration_s: float


@dataclass
class LoadOutcome:
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0


def request_bytes(plan: LoadPlan) -> tuple[str, int, bytes]:
    """Host, port and the whole HTTP/1.1 request, encoded once."""
    parts = urlsplit(plan.url)
    if parts.scheme != "http":
        raise ValueError("bench's load loop speaks plain http:// (use --procs 0 for https)")
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(plan.body)}",
             *(f"{k}: {v}" for k, v in plan.headers.items())]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + plan.body


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response; return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked answers are not supported by bench's load loop")
    if length:
        await reader.readexactly(length)
    return status


async def run_plan(plan: LoadPlan) -> LoadOutcome:
    """Keep ``plan.connections`` requests in flight until the count or the time runs out."""
    host, port, raw = request_bytes(plan)
    outcome = LoadOutcome()
    remaining = plan.requests
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    deadline = start + plan.duration_s

    async def connection() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                sent = time.perf_counter()
                writer.write(raw)
                status = await _answer(reader)
                if status < 400:
                    outcome.latencies_s.append(time.perf_counter() - sent)
                else:
                    outcome.errors[f"HTTP {status}"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome.errors[type(exc).__name__] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(plan.connections)))
    outcome.elapsed_s = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    outcome.cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return outcome


def _worker(plan: LoadPlan) -> dict[str, Any]:
    try:  # uvicorn[standard] brings uvloop: a cheaper loop, so the client costs less
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        outcome = loop.run_until_complete(run_plan(plan))
    finally:
        loop.close()
    return {"latencies_s": outcome.latencies_s, "errors": dict(outcome.errors),
            "elapsed_s": outcome.elapsed_s, "cpu_s": outcome.cpu_s}


def run_processes(plan: LoadPlan, procs: int) -> list[LoadOutcome]:
    """Split the plan over ``procs`` processes (1: this one); one outcome per process."""
    procs = max(1, min(procs, plan.connections))
    shares = [plan.connections // procs + (1 if i < plan.connections % procs else 0) for i in range(procs)]
    per_requests = [plan.requests * s // plan.connections for s in shares]
    per_requests[0] += plan.requests - sum(per_requests)
    plans = [LoadPlan(plan.url, plan.body, plan.headers, s, n, plan.duration_s)
             for s, n in zip(shares, per_requests)]
    if procs == 1:
        docs = [_worker(plans[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            docs = pool.map(_worker, plans)
    return [LoadOutcome(d["latencies_s"], Counter(d["errors"]), d["elapsed_s"], d["cpu_s"]) for d in docs]
