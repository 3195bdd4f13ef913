"""``scriptserve bench``: a small, bounded load against a served model.

It stops after ``--requests`` requests or ``--duration-s`` seconds, whichever comes first,
and reports throughput, latency percentiles and errors. Inputs come from ``--data`` /
``--input``, or are made up from the model's v2 metadata (known from the upload's
``example_inputs`` or declared signature, else once a request has shown the shapes).

The request is encoded once and sent by ``app.cli.load``'s raw keep-alive loop, in
``--procs`` worker processes, so that the server is what is measured; the summary says when
a worker's CPU was nearly saturated (client-bound), and how long requests spent inside the
server (its statistics extension) next to what the client saw.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from app.cli.connection import (
    client_options,
    make_async_client,
    reports_errors,
    resolve_token,
    server_url,
    settings_for,
)
from app.cli.inputs import input_options, load_inputs
from app.cli.load import LoadPlan, run_processes
from app.cli.output import console, print_json

MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 64
MAX_DURATION_S = 600.0


CLIENT_BOUND = 0.9
"""A worker process busy this share of a core or more: the client was the limit."""


@dataclass
class BenchResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    client_busy: list[float] = field(default_factory=list)
    """Per worker process: CPU seconds / wall seconds."""
    server: dict[str, Any] | None = None

    def summary(self, rows: int) -> dict[str, Any]:
        import numpy as np

        done = len(self.latencies_s)
        ms = np.asarray(self.latencies_s) * 1000 if done else np.zeros(1)
        busy = max(self.client_busy) if self.client_busy else None
        return {
            "requests": done + sum(self.errors.values()),
            "succeeded": done,
            "failed": sum(self.errors.values()),
            "errors": dict(self.errors),
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_s": round(done / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "samples_per_s": round(done * rows / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "latency_ms": {p: round(float(np.percentile(ms, q)), 2)
                           for p, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
            "client_processes": len(self.client_busy) or 1,
            "client_cpu_busy": round(busy, 2) if busy is not None else None,
            "client_bound": busy is not None and busy >= CLIENT_BOUND,
            "server": self.server,
        }


def made_up_inputs(metadata: dict[str, Any], batch: int) -> dict[str, Any]:
    """Random inputs matching the v2 metadata (-1 dims become ``batch``)."""
    import torch

    from app.wire.dtypes import BY_DATATYPE
    from app.wire.v2 import UNKNOWN

    inputs = {}
    for spec in metadata["inputs"]:
        if spec.get("parameters", {}).get("optional"):
            continue
        if spec["datatype"] == UNKNOWN:
            raise ValueError(
                f"the server has not seen input {spec['name']!r} yet, so its shape is unknown: "
                "give --data or --input (or predict once first)"
            )
        shape = [batch if d == -1 else d for d in spec["shape"]]
        dtype = BY_DATATYPE[spec["datatype"]].torch
        if dtype.is_floating_point:
            inputs[spec["name"]] = torch.randn(shape).to(dtype)
        elif dtype == torch.bool:
            inputs[spec["name"]] = torch.rand(shape) > 0.5
        else:
            inputs[spec["name"]] = torch.randint(0, 2, shape, dtype=dtype)
    return inputs


async def run_load(client: Any, args: argparse.Namespace, inputs: Any) -> BenchResult:
    """``args.concurrency`` workers send requests until the count or the time runs out."""
    from app.client import ApiError, ClientError

    async def one() -> None:
        if args.v2:
            await client.infer(args.name, inputs, version=args.version)
        else:
            await client.predict(args.name, inputs, version=args.version)

    await one()  # warm-up (and the batch-safety probe); not counted
    result = BenchResult()
    remaining = args.requests
    start = time.perf_counter()
    deadline = start + args.duration_s

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            sent = time.perf_counter()
            try:
                await one()
            except ApiError as exc:
                result.errors[f"{exc.status_code} {exc.code}"] += 1
            except ClientError as exc:
                result.errors[type(exc).__name__] += 1
            else:
                result.latencies_s.append(time.perf_counter() - sent)

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    result.elapsed_s = time.perf_counter() - start
    return result


def _plan(args: argparse.Namespace, base: str, token: str | None, inputs: Any,
          first_input: str | None) -> LoadPlan:
    """The request every worker repeats, encoded once."""
    from app.client.tensors import native_body, v2_body

    version = f"/versions/{args.version}" if args.version is not None else ""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if args.v2:
        named = inputs if isinstance(inputs, dict) else {str(first_input): inputs}
        body, json_length = v2_body(named, True, None)
        headers.update({"Content-Type": "application/octet-stream",
                        "Inference-Header-Content-Length": str(json_length)})
        url = f"{base}/v2/models/{args.name}{version}/infer"
    else:
        body = native_body(inputs)
        headers["Content-Type"] = "application/json"
        url = f"{base}/models/{args.name}{version}/predict"
    return LoadPlan(url, body, headers, args.concurrency, args.requests, args.duration_s)


async def _server_stats(
    base: str, headers: dict[str, str], args: argparse.Namespace
) -> dict[str, float] | None:
    """Successful requests and their summed seconds inside the server (None: stats off)."""
    import httpx

    version = f"/versions/{args.version}" if args.version is not None else ""
    auth = {k: v for k, v in headers.items() if k == "Authorization"}
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(f"{base}/v2/models/{args.name}{version}/stats", headers=auth)
    if r.status_code != 200:
        return None
    doc = r.json()
    count = ns = 0
    for s in doc.get("model_stats", []):
        success = s.get("inference_stats", {}).get("success", {})
        count += int(success.get("count", 0))
        ns += int(success.get("ns", 0))
    return {"count": count, "seconds": ns / 1e9}


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    async with make_async_client(args) as client:
        meta = None
        if args.data is not None or args.input:
            inputs = load_inputs(args.data, args.input)
        else:
            meta = await client.metadata(args.name, args.version)
            inputs = made_up_inputs(meta, args.batch)
        if args.procs == 0:  # the Python client itself (https, or to compare)
            result = await run_load(client, args, inputs)
            return result.summary(_rows(inputs))
        if args.v2 and not isinstance(inputs, dict) and meta is None:
            meta = await client.metadata(args.name, args.version)
        first = meta["inputs"][0]["name"] if meta else None
        settings = settings_for(args)
        base = server_url(args, settings).rstrip("/")
        plan = _plan(args, base, resolve_token(args, settings), inputs, first)
        if args.v2:
            await client.infer(args.name, inputs if isinstance(inputs, dict) else {first: inputs},
                               version=args.version)  # warm-up; not counted
        else:
            await client.predict(args.name, inputs, version=args.version)
        before = await _server_stats(base, plan.headers, args)
        outcomes = await asyncio.to_thread(run_processes, plan, args.procs)
        after = await _server_stats(base, plan.headers, args)
    result = BenchResult()
    for outcome in outcomes:
        result.latencies_s.extend(outcome.latencies_s)
        result.errors.update(outcome.errors)
        result.client_busy.append(outcome.cpu_s / outcome.elapsed_s if outcome.elapsed_s else 0.0)
    result.elapsed_s = max(o.elapsed_s for o in outcomes)
    if before is not None and after is not None and after["count"] > before["count"]:
        n = after["count"] - before["count"]
        at_client = sum(result.latencies_s) / max(len(result.latencies_s), 1)
        result.server = {"requests": n,
                         "mean_ms_in_server": round((after["seconds"] - before["seconds"]) / n * 1000, 3),
                         "mean_ms_at_client": round(at_client * 1000, 3)}
    return result.summary(_rows(inputs))


def _rows(inputs: Any) -> int:
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    if isinstance(first, list) and first and all(isinstance(v, list) for v in first):
        return len(first)
    shape = getattr(first, "shape", None)
    return int(shape[0]) if shape else 1


@reports_errors
def bench(args: argparse.Namespace) -> int:
    if not 1 <= args.requests <= MAX_REQUESTS:
        raise ValueError(f"--requests must be between 1 and {MAX_REQUESTS}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    if not 0 < args.duration_s <= MAX_DURATION_S:
        raise ValueError(f"--duration-s must be above 0 and at most {MAX_DURATION_S:g}")
    if not 0 <= args.procs <= 16:
        raise ValueError("--procs must be between 0 and 16")
    summary = asyncio.run(_bench(args))
    if args.json:
        print_json(summary)
        return 0
    lat = summary["latency_ms"]
    out = console()
    out.print(f"[bold]{args.name}[/]: {summary['requests']} requests in {summary['elapsed_s']} s, "
              f"concurrency {args.concurrency}, {summary['failed']} failed")
    out.print(f"throughput  {summary['requests_per_s']} req/s ({summary['samples_per_s']} samples/s)")
    out.print(f"latency ms  p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}")
    if summary["server"]:
        server = summary["server"]
        out.print(f"in server   {server['mean_ms_in_server']} ms per request on average; the client "
                  f"saw {server['mean_ms_at_client']} ms")
    for error, count in summary["errors"].items():
        out.print(f"errors      {count} x {error}")
    if summary["client_bound"]:
        out.print(f"[yellow]client-bound[/]: a load process was {summary['client_cpu_busy']:.0%} busy, so "
                  "these numbers are the client's limit, not the server's; raise --procs, or drive "
                  "wrk / scripts/bench.py")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", parents=[client_options()],
                       help="a short, bounded load test against a served model")
    p.add_argument("name")
    input_options(p)
    p.add_argument("-n", "--requests", type=int, default=200, help="requests to send (default 200)")
    p.add_argument("-c", "--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--duration-s", type=float, default=30.0,
                   help="stop after this many seconds even if requests remain (default 30)")
    p.add_argument("--batch", type=int, default=1,
                   help="rows per made-up request when inputs come from metadata (default 1)")
    p.add_argument("--v2", action="store_true", help="use v2 binary inference instead of predict")
    p.add_argument("--procs", type=int, default=1,
                   help="load processes, each with its share of --concurrency (default 1; "
                   "0: send through the Python client instead of the raw load loop)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=bench)
