#!/usr/bin/env python3
"""Metrics on vs off, interleaved: two servers side by side, short alternating wrk bursts.

A shared machine drifts between load levels over tens of seconds, which swamps a few percent
between long back-to-back runs. Here both servers (SCRIPTSERVE_METRICS_ENABLED true / false,
otherwise identical, example classifier) run at once; each round sends one short wrk burst
to each, in alternating order, and the result is the median of the per-round ratios.

    .venv/bin/python scripts/bench_metrics_interleaved.py --rounds 20 --seconds 2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import parse_wrk  # noqa: E402


def start(port: int, store: Path, metrics: bool) -> subprocess.Popen:
    env = dict(os.environ, SCRIPTSERVE_MODEL_STORE=str(store), SCRIPTSERVE_PORT=str(port),
               SCRIPTSERVE_HOST="127.0.0.1", SCRIPTSERVE_ADMIN_TOKEN="bench",
               SCRIPTSERVE_INSTALL_EXAMPLE="true", SCRIPTSERVE_LOG_LEVEL="warning",
               SCRIPTSERVE_METRICS_ENABLED=str(metrics).lower())
    proc = subprocess.Popen([str(HERE.parent / ".venv/bin/scriptserve"), "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not become ready")


def burst(port: int, body: Path, seconds: int, conns: int) -> float:
    env = dict(os.environ, BODY_FILE=str(body), CONTENT_TYPE="application/json")
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", str(HERE / "wrk_post.lua"),
                          f"http://127.0.0.1:{port}/models/classifier/predict"],
                         env=env, capture_output=True, text=True, timeout=seconds + 30)
    return parse_wrk(out.stdout)["rps"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--port", type=int, default=18700)
    ap.add_argument("--a-a", action="store_true",
                    help="control run: metrics off on both servers, to see the method's own bias")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scriptserve-ovh-") as tmp:
        body = Path(tmp) / "body.json"
        body.write_text(json.dumps({"inputs": [[0.01 * i for i in range(320)]]}))
        ports = {True: args.port, False: args.port + 1}
        procs = [start(ports[m], Path(tmp) / f"store-{m}", m and not args.a_a) for m in (True, False)]
        try:
            for m in (True, False):
                burst(ports[m], body, 2, args.connections)  # warm-up
            on, off = [], []
            for i in range(args.rounds):
                order = (True, False) if i % 2 == 0 else (False, True)
                got = {m: burst(ports[m], body, args.seconds, args.connections) for m in order}
                on.append(got[True])
                off.append(got[False])
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
    ratios = [a / b for a, b in zip(on, off)]
    med = statistics.median
    if args.a_a:
        print("control run: both servers have metrics off ('on' is the first server)")
    print(f"metrics on : median {med(on):.0f} req/s  {[round(x) for x in on]}")
    print(f"metrics off: median {med(off):.0f} req/s  {[round(x) for x in off]}")
    print(f"on/off per round: median {med(ratios):.3f} (cost {100 * (1 - med(ratios)):+.1f}%), "
          f"quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}..{statistics.quantiles(ratios, n=4)[2]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
