#!/usr/bin/env python3
"""A/B throughput of two ScriptServe checkouts (or settings), interleaved on one machine.

Both servers run at once with the same model; each round sends one short wrk burst to
each, in alternating order, and the result is the median of the per-round B/A ratios (a
shared machine drifts between load levels over tens of seconds, which swamps a few percent
between long back-to-back runs). `--b` defaults to `--a`: an A/A control shows the noise.

    .venv/bin/python scripts/bench_ab.py --a /work/before --b . --model seed_mlp \\
        --conns 32 --rounds 20 --seconds 3 [--b-env SCRIPTSERVE_WORKERS=2]

Models come from ../shared/bench/models.py (built into --model-dir if missing). Each checkout
needs its own .venv (scripts/setup_env.sh). Bounded: rounds x seconds x 2 of load.
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

FEATURES = {"seed_mlp": 320, "deep_mlp": 256}
TOKEN = "bench-ab"


def start(checkout: Path, port: int, store: Path, env_extra: dict[str, str]) -> subprocess.Popen:
    env = dict(os.environ, SCRIPTSERVE_MODEL_STORE=str(store), SCRIPTSERVE_PORT=str(port),
               SCRIPTSERVE_HOST="127.0.0.1", SCRIPTSERVE_ADMIN_TOKEN=TOKEN,
               SCRIPTSERVE_LOG_LEVEL="warning", SCRIPTSERVE_MAX_BATCH_DELAY_MS="5",
               SCRIPTSERVE_MAX_BATCH_SIZE="32", **env_extra)
    proc = subprocess.Popen([str(checkout / ".venv/bin/scriptserve"), "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=checkout)
    for _ in range(1200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server in {checkout} exited during start-up")
        time.sleep(0.1)
    raise SystemExit(f"server in {checkout} did not become ready")


def upload(port: int, archive: Path, name: str) -> None:
    with open(archive, "rb") as fh:
        r = httpx.post(f"http://127.0.0.1:{port}/models", headers={"Authorization": f"Bearer {TOKEN}"},
                       data={"name": name}, files={"file": (archive.name, fh)}, timeout=300)
    if r.status_code != 201:
        raise SystemExit(f"upload to {port} failed: {r.status_code} {r.text[:300]}")


def burst(port: int, name: str, body: Path, seconds: int, conns: int) -> dict[str, float]:
    env = dict(os.environ, BODY_FILE=str(body), CONTENT_TYPE="application/json")
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s",
                          str(HERE / "wrk_post.lua"), f"http://127.0.0.1:{port}/models/{name}/predict"],
                         env=env, capture_output=True, text=True, timeout=seconds + 60)
    return parse_wrk(out.stdout)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def env_pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, required=True, help="checkout A (with .venv)")
    ap.add_argument("--b", type=Path, default=None, help="checkout B (default: A again)")
    ap.add_argument("--a-env", action="append", default=[], metavar="K=V")
    ap.add_argument("--b-env", action="append", default=[], metavar="K=V")
    ap.add_argument("--model", choices=sorted(FEATURES), default="seed_mlp")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/bench-models"))
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--port", type=int, default=18700)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not 1 <= args.rounds <= 200 or not 1 <= args.seconds <= 30 or not 1 <= args.conns <= 512:
        raise SystemExit("rounds 1-200, seconds 1-30, conns 1-512")
    a, b = args.a.resolve(), (args.b or args.a).resolve()
    archive = args.model_dir / f"{args.model}.torchscript"
    if not archive.exists():
        subprocess.run([sys.executable, str(HERE.parents[1] / "shared/bench/models.py"), str(args.model_dir)],
                       check=True)
    body = Path(tempfile.mkstemp(suffix=".json")[1])
    body.write_text(json.dumps({"inputs": [[0.1] * FEATURES[args.model]]}))
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            "A": start(a, args.port, Path(tmp) / "a", env_pairs(args.a_env)),
            "B": start(b, args.port + 1, Path(tmp) / "b", env_pairs(args.b_env)),
        }
        try:
            ports = {"A": args.port, "B": args.port + 1}
            for label in ports:
                upload(ports[label], archive, args.model)
                burst(ports[label], args.model, body, 2, args.conns)  # warm-up
            for i in range(args.rounds):
                order = ("A", "B") if i % 2 == 0 else ("B", "A")
                result = {label: burst(ports[label], args.model, body, args.seconds, args.conns)
                          for label in order}
                rounds.append({"a_rps": result["A"]["rps"], "b_rps": result["B"]["rps"],
                               "a_p99_ms": result["A"].get("p99_ms") or 0.0,
                               "b_p99_ms": result["B"].get("p99_ms") or 0.0})
        finally:
            for proc in servers.values():
                stop(proc)
    ratios = sorted(r["b_rps"] / r["a_rps"] for r in rounds if r["a_rps"])
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    summary = {
        "a": str(a), "b": str(b), "a_env": args.a_env, "b_env": args.b_env, "model": args.model,
        "conns": args.conns, "rounds": args.rounds, "seconds": args.seconds,
        "a_rps_median": statistics.median(r["a_rps"] for r in rounds),
        "b_rps_median": statistics.median(r["b_rps"] for r in rounds),
        "a_p99_ms_median": statistics.median(r["a_p99_ms"] for r in rounds),
        "b_p99_ms_median": statistics.median(r["b_p99_ms"] for r in rounds),
        "b_over_a_median": statistics.median(ratios), "b_over_a_iqr": [q[0], q[2]],
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2))
    body.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
