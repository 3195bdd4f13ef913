#!/usr/bin/env python3
"""Closed-loop gRPC load on ModelInfer, bounded in time: the gRPC counterpart of wrk.

Each worker process opens one channel and keeps ``conns / procs`` calls in flight, sending
one pre-serialised ``ModelInferRequest`` (raw FP32 contents) again and again without
decoding the answers beyond their status, so that the client costs little next to the
server. Prints one JSON line: requests/s, p50/p90/p99 in ms, errors, and how busy each
worker process was (``client_cpu_busy`` near 1.0: the client was the limit, not the server).

    .venv/bin/python scripts/grpc_load.py 127.0.0.1:8001 seed_mlp --features 64 --conns 32 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def request_bytes(model: str, features: int) -> bytes:
    from app.grpc.proto import open_inference_pb2 as pb

    x = np.random.default_rng(0).uniform(-1, 1, (1, features)).astype("<f4")
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[1, features])
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


async def worker(address: str, body: bytes, conns: int, seconds: float) -> dict:
    import grpc

    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out: no (de)serialisation here
        for _ in range(3):
            await call(body, timeout=10)
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    await call(body, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(conns)))
        elapsed = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed,
            "cpu_s": cpu.ru_utime + cpu.ru_stime}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("address")
    ap.add_argument("model")
    ap.add_argument("--features", type=int, required=True)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--procs", type=int, default=0, help="worker processes (default: 1, 2 past 8 conns)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    body = request_bytes(args.model, args.features)
    if args.worker:
        print(json.dumps(asyncio.run(worker(args.address, body, args.conns, args.duration))))
        return 0
    procs = args.procs or (1 if args.conns <= 8 else 2)
    procs = min(procs, args.conns)
    shares = [args.conns // procs + (1 if i < args.conns % procs else 0) for i in range(procs)]
    children = [
        subprocess.Popen([sys.executable, __file__, args.address, args.model, "--features",
                          str(args.features), "--conns", str(n), "--duration", str(args.duration),
                          "--worker"], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        for n in shares
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=args.duration + 60)
        results.append(json.loads(out.strip().splitlines()[-1]))
    latencies = np.array([x for r in results for x in r["latencies"]]) * 1e3
    elapsed = max(r["elapsed"] for r in results)
    count = len(latencies)
    rps = count / elapsed if elapsed else 0.0
    summary = {
        "rps": rps,
        "p50_ms": float(np.percentile(latencies, 50)) if count else None,
        "p90_ms": float(np.percentile(latencies, 90)) if count else None,
        "p99_ms": float(np.percentile(latencies, 99)) if count else None,
        "errors": sum(r["errors"] for r in results),
        # share of a core each worker process was busy (start-up included): near 1.0, the
        # client was the limit, not the server
        "client_cpu_busy": sum(r["cpu_s"] for r in results) / (elapsed * procs) if elapsed else None,
        "procs": procs,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
