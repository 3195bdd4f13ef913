#!/usr/bin/env python3
"""Bounded load test on loopback: swap under load, then 10x overload, then recovery.

Starts its own server on 127.0.0.1 (a temporary store, the tutorial's classifier), then:

1. ``--clients`` concurrent clients for ``--duration-s`` seconds against the default version;
   a quarter of the way in a new version is uploaded, halfway the old one is deleted.
   Every request must succeed.
2. ``--overload`` times as many clients for ``--overload-s`` seconds, with a per-version
   queue of ``--queue`` requests: the excess must be answered 503 (quickly), and the
   server's memory (RSS) must stay bounded.
3. ``--clients`` clients again for ``--recovery-s`` seconds: every request must succeed.

Every loop is bounded in time and count; nothing leaves 127.0.0.1. Prints the numbers and
exits non-zero if a phase failed its condition.

    .venv/bin/python scripts/load_test.py            # about two minutes
    .venv/bin/python scripts/load_test.py --duration-s 10 --overload-s 5 --recovery-s 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "load-test-token"
MAX_REQUESTS_PER_PHASE = 2_000_000
_VERSION = re.compile(rb'"version":(\d+)')


@dataclass
class Phase:
    name: str
    statuses: Counter = field(default_factory=Counter)
    versions: Counter = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    rss_max: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def record(self, status: str, seconds: float, version: int | None) -> None:
        self.statuses[status] += 1
        self.latencies.setdefault(status, []).append(seconds)
        if version is not None:
            self.versions[version] += 1

    def report(self) -> str:
        lines = [f"{self.name}: {self.total} requests in {self.seconds:.1f} s "
                 f"({self.total / max(self.seconds, 1e-9):.0f}/s), server RSS max "
                 f"{self.rss_max / 2**20:.0f} MiB"]
        for status, count in sorted(self.statuses.items()):
            lat = sorted(self.latencies[status])
            lines.append(f"  {status}: {count}  latency p50 {pct(lat, 50) * 1000:.1f} ms, "
                         f"p99 {pct(lat, 99) * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
        if self.versions:
            lines.append(f"  answered by versions: {dict(sorted(self.versions.items()))}")
        return "\n".join(lines)


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def save_classifier(folder: Path, seed: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from app.examples import scripted_classifier

    path = folder / f"classifier-{seed}.torchscript"
    scripted_classifier(seed).save(str(path))
    return path


async def upload(http: httpx.AsyncClient, path: Path) -> int:
    with open(path, "rb") as fh:
        r = await http.post("/models", data={"name": "clf"}, files={"file": (path.name, fh.read())},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300)
    return r.status_code


class Connection:
    """A minimal HTTP/1.1 keep-alive client: a Python load generator must not be the
    bottleneck (httpx costs milliseconds of CPU per request; this costs microseconds)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("connection closed before a response")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def predict_request(port: int) -> bytes:
    body = b'{"inputs": [[' + b",".join([b"0.1"] * 320) + b"]]}"
    head = (f"POST /models/clf/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def drive(url: str, clients: int, seconds: float, phase: Phase, pid: int,
                events: list[tuple[float, object]] | None = None, backoff: bool = True) -> None:
    """``clients`` closed-loop clients for ``seconds``; ``events`` run at their offsets.

    With ``backoff`` a client answered 503 waits as Retry-After says, as a well-behaved
    client does; without, it retries at once (a retry storm).
    """
    port = int(url.rsplit(":", 1)[1])
    raw = predict_request(port)
    start = time.monotonic()
    stop_at = start + seconds

    async def client() -> None:
        connection = Connection("127.0.0.1", port)
        try:
            while time.monotonic() < stop_at and phase.total < MAX_REQUESTS_PER_PHASE:
                t0 = time.monotonic()
                try:
                    code, body = await asyncio.wait_for(connection.request(raw), 120)
                    status = str(code)
                    if code == 503 and backoff:
                        phase.record(status, time.monotonic() - t0, None)
                        await asyncio.sleep(min(1.0, max(0.0, stop_at - time.monotonic())))
                        continue
                    match = _VERSION.search(body) if code == 200 else None
                    version = int(match.group(1)) if match else None
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
                    status, version = type(exc).__name__, None
                    await connection.close()
                phase.record(status, time.monotonic() - t0, version)
        finally:
            await connection.close()

    async def sample_memory() -> None:
        while time.monotonic() < stop_at:
            phase.rss_max = max(phase.rss_max, rss_bytes(pid))
            await asyncio.sleep(0.25)

    async def scheduled(http: httpx.AsyncClient) -> None:
        for offset, action in events or []:
            await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
            result = await action(http)  # type: ignore[operator]
            print(f"  t={time.monotonic() - start:5.1f} s  {getattr(action, '__doc__', '')}: {result}")

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await asyncio.gather(*(client() for _ in range(clients)), sample_memory(), scheduled(http))
    phase.seconds = time.monotonic() - start


def start_server(store: Path, port: int, queue: int, max_in_flight: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTSERVE_")}
    env.update({
        "SCRIPTSERVE_MODEL_STORE": str(store), "SCRIPTSERVE_HOST": "127.0.0.1",
        "SCRIPTSERVE_PORT": str(port), "SCRIPTSERVE_ADMIN_TOKEN": TOKEN,
        "SCRIPTSERVE_DEVICE": "cpu", "SCRIPTSERVE_LOG_LEVEL": "warning",
        "SCRIPTSERVE_INSTALL_EXAMPLE": "false", "SCRIPTSERVE_MAX_QUEUE_SIZE": str(queue),
        "SCRIPTSERVE_TORCH_THREADS": os.environ.get("SCRIPTSERVE_TORCH_THREADS", "1"),
        "SCRIPTSERVE_MAX_CONCURRENT_PREDICTIONS": str(max_in_flight),
    })
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env,
                                stdout=out, stderr=out)


async def main_async(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="scriptserve-load-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(folder / "store", port, args.queue, args.max_in_flight, folder / "server.log")
    try:
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            while True:
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    print((folder / "server.log").read_text()[-3000:])
                    return 2
                await asyncio.sleep(0.1)
            first, second = save_classifier(folder, 0), save_classifier(folder, 1)
            print("upload v1:", await upload(http, first))
        baseline = rss_bytes(server.pid)
        print(f"server RSS after start-up and v1: {baseline / 2**20:.0f} MiB; "
              f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")

        async def new_version(http: httpx.AsyncClient) -> int:
            """upload v2"""
            return await upload(http, second)

        async def delete_old(http: httpx.AsyncClient) -> int:
            """delete v1"""
            r = await http.delete("/models/clf/versions/1",
                                  headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300)
            return r.status_code

        swap = Phase(f"1. swap under load: {args.clients} clients")
        print(f"{swap.name} for {args.duration_s:g} s")
        await drive(url, args.clients, args.duration_s, swap, server.pid,
                    [(args.duration_s / 4, new_version), (args.duration_s / 2, delete_old)])
        print(swap.report())
        over = Phase(f"2. overload: {args.clients * args.overload} clients, queue {args.queue}, "
                     f"in flight {args.max_in_flight}, "
                     f"{'no backoff' if args.no_backoff else 'clients honour Retry-After'}")
        print(f"{over.name} for {args.overload_s:g} s")
        await drive(url, args.clients * args.overload, args.overload_s, over, server.pid,
                    backoff=not args.no_backoff)
        print(over.report())
        again = Phase(f"3. recovery: {args.clients} clients")
        print(f"{again.name} for {args.recovery_s:g} s")
        await drive(url, args.clients, args.recovery_s, again, server.pid)
        print(again.report())

        ok = set(swap.statuses) == {"200"} and set(again.statuses) == {"200"}
        ok = ok and swap.versions.keys() == {1, 2} and set(over.statuses) <= {"200", "503"}
        rejected = sorted(over.latencies.get("503", []))
        served = sorted(over.latencies.get("200", []))
        print("summary:")
        print(f"  swap phase failures: {swap.total - swap.statuses['200']}; recovery failures: "
              f"{again.total - again.statuses['200']}")
        print(f"  overload: {len(rejected)} answered 503 (p50 {pct(rejected, 50) * 1000:.1f} ms, "
              f"p99 {pct(rejected, 99) * 1000:.1f} ms), {len(served)} answered 200 "
              f"(p50 {pct(served, 50) * 1000:.1f} ms), other: "
              f"{over.total - len(rejected) - len(served)}")
        print(f"  RSS MiB: baseline {baseline / 2**20:.0f}, swap max {swap.rss_max / 2**20:.0f}, "
              f"overload max {over.rss_max / 2**20:.0f}, recovery max {again.rss_max / 2**20:.0f}")
        if served and rejected:
            print(f"  503 answered {statistics.median(served) / max(statistics.median(rejected), 1e-9):.0f}x "
                  "faster than a served request (medians)")
        print("result:", "PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--overload", type=int, default=10, help="clients multiplier in phase 2")
    parser.add_argument("--overload-s", type=float, default=20.0)
    parser.add_argument("--recovery-s", type=float, default=20.0)
    parser.add_argument("--queue", type=int, default=64, help="SCRIPTSERVE_MAX_QUEUE_SIZE")
    parser.add_argument("--no-backoff", action="store_true",
                        help="overload clients ignore Retry-After (a retry storm)")
    parser.add_argument("--max-in-flight", type=int, default=96,
                        help="SCRIPTSERVE_MAX_CONCURRENT_PREDICTIONS")
    args = parser.parse_args()
    for value in (args.duration_s, args.overload_s, args.recovery_s):
        if not 0 < value <= 600:
            parser.error("phase durations must be between 0 and 600 s")
    if not 1 <= args.clients * args.overload <= 2000:
        parser.error("at most 2000 concurrent clients")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
