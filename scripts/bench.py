#!/usr/bin/env python3
"""Served throughput and latency as ratios of the model's own in-process speed.

Starts `scriptserve serve` (from ./.venv) on 127.0.0.1 with a temporary store, uploads each
reference model, measures the in-process forward rate at batch 1 and at the max batch, then
drives the server at each concurrency, bounded in time: HTTP (native predict, JSON) with wrk
(Debian package `wrk`), gRPC (ModelInfer, raw FP32) with scripts/grpc_load.py.
Every figure comes from the same run, so it reads as a fraction of what the model can do on
this machine right now.

    .venv/bin/python scripts/bench.py --models seed_mlp,deep_mlp --concurrency 1,32 --duration 10
    .venv/bin/python scripts/bench.py --protocols grpc     # gRPC only (no wrk needed)

--formats torchscript,exported_program,aoti serves each model in each format (a torch.export
archive with a dynamic batch Dim; an AOTInductor package compiled here first, a minute or more
per model), each with its own in-process rate, so the formats compare within one run.

SCRIPTSERVE_* variables in the environment pass through to the server (e.g. to compare
SCRIPTSERVE_METRICS_ENABLED=false with the default).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_models import MODELS, build  # noqa: E402

FORMATS = ("torchscript", "exported_program", "aoti")


def build_format(name: str, fmt: str, folder: Path, max_batch: int) -> tuple[Path, Any, int]:
    """The model saved in ``fmt`` (seed 0), the in-process callable of that file, and its features."""
    module, features = build(name)
    if fmt == "torchscript":
        path = folder / f"{name}.torchscript"
        module.save(str(path))  # saved from the CPU copy; the server places it on --device
        return path, module, features
    cls, _ = MODELS[name]
    torch.manual_seed(0)
    eager = cls().eval()
    example = (torch.rand(2, features),)
    dynamic = ({0: torch.export.Dim("batch", max=max(max_batch, 2) * 64)},)
    program = torch.export.export(eager, example, dynamic_shapes=dynamic)
    path = folder / f"{name}-{fmt}.pt2"
    if fmt == "exported_program":
        torch.export.save(program, str(path))
        return path, torch.export.load(str(path)).module(), features
    t0 = time.perf_counter()
    torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    print(f"{name}: AOTInductor compile took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path, torch._inductor.aoti_load_package(str(path)), features


def in_process_rate(module: Any, features: int, batch: int, device: str) -> float:
    """Best-of-three samples/s of module(x) for a batch of ``batch`` host rows.

    On CUDA each call includes the host-to-device copy and the copy back, as a server pays.
    """
    x = torch.rand(batch, features)
    if isinstance(module, torch.jit.ScriptModule):
        module = module.to(device)

    def call() -> None:
        out = module(x.to(device, non_blocking=True))
        out.cpu()

    best = 0.0
    with torch.inference_mode():
        for _ in range(10):
            call()
        for _ in range(3):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 0.7:
                call()
                n += 1
            best = max(best, n * batch / (time.perf_counter() - t0))
    return best


def parse_wrk(text: str) -> dict:
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}
    out: dict = {"rps": 0.0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(m.group(1))
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\b", text, re.M)
        out[f"p{pct}_ms"] = float(m.group(1)) * unit[m.group(2)] if m else None
    m = re.search(r"non-200 responses: (\d+)", text)
    out["non_200"] = int(m.group(1)) if m else None
    m = re.search(r"Socket errors: (.*)", text)
    out["socket_errors"] = m.group(1).strip() if m else ""
    return out


def wrk(url: str, body_file: Path, conns: int, seconds: int) -> dict:
    env = dict(os.environ, BODY_FILE=str(body_file), CONTENT_TYPE="application/json")
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "--latency",
           "-s", str(HERE / "wrk_post.lua"), url]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    return parse_wrk(res.stdout + res.stderr)


def grpc_load(address: str, model: str, features: int, conns: int, seconds: int) -> dict:
    cmd = [sys.executable, str(HERE / "grpc_load.py"), address, model, "--features", str(features),
           "--conns", str(conns), "--duration", str(seconds)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90)
    if res.returncode != 0:
        raise SystemExit(f"grpc_load failed: {res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["non_200"] = out.pop("errors")
    return out


def start_server(store: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    env = dict(os.environ)
    env.update({
        "SCRIPTSERVE_MODEL_STORE": str(store), "SCRIPTSERVE_HOST": "127.0.0.1",
        "SCRIPTSERVE_PORT": str(port), "SCRIPTSERVE_ADMIN_TOKEN": "bench",
        "SCRIPTSERVE_GRPC_PORT": str(port + 1),
        "SCRIPTSERVE_MAX_BATCH_SIZE": str(args.max_batch),
        "SCRIPTSERVE_MAX_BATCH_DELAY_MS": str(args.max_delay_ms),
        "SCRIPTSERVE_LOG_LEVEL": env.get("SCRIPTSERVE_LOG_LEVEL", "warning"),
        "SCRIPTSERVE_INSTALL_EXAMPLE": "false",
        "SCRIPTSERVE_DEVICE": args.device,
    })
    exe = ROOT / ".venv" / "bin" / "scriptserve"
    with open(store / "server.log", "wb") as log:  # the child keeps its own copy of the fd
        proc = subprocess.Popen([str(exe), "serve"], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(store / 'server.log').read_text()[-2000:]}")
        time.sleep(0.1)
    raise SystemExit("server did not become ready")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def bench_model(name: str, fmt: str, args: argparse.Namespace, tmp: Path) -> dict:
    archive, module, features = build_format(name, fmt, tmp, args.max_batch)
    limit1 = in_process_rate(module, features, 1, args.device)
    limit_b = in_process_rate(module, features, args.max_batch, args.device)
    store = tmp / f"store-{name}-{fmt}"
    store.mkdir()
    port = args.port
    proc = start_server(store, port, args)
    label = name if fmt == "torchscript" else f"{name}/{fmt}"
    result: dict = {"model": label, "limit@1": limit1, f"limit@{args.max_batch}": limit_b, "runs": {}}
    try:
        with open(archive, "rb") as fh:
            r = httpx.post(f"http://127.0.0.1:{port}/models", headers={"Authorization": "Bearer bench"},
                           data={"name": name}, files={"file": fh}, timeout=300)
        r.raise_for_status()
        url = f"http://127.0.0.1:{port}/models/{name}/predict"
        row = [round(random.uniform(-1, 1), 6) for _ in range(features)]
        body_file = tmp / f"{name}.json"
        body_file.write_text(json.dumps({"inputs": [row]}))
        address = f"127.0.0.1:{port + 1}"
        if "http" in args.protocols:
            wrk(url, body_file, max(args.concurrency), 3)  # warm-up
            for conns in args.concurrency:
                result["runs"][("http", conns)] = wrk(url, body_file, conns, args.duration)
        if "grpc" in args.protocols:
            grpc_load(address, name, features, max(args.concurrency), 2)  # warm-up
            for conns in args.concurrency:
                result["runs"][("grpc", conns)] = grpc_load(address, name, features, conns, args.duration)
        result["limit_after@1"] = in_process_rate(module, features, 1, args.device)
    finally:
        stop(proc)
    return result


def report(results: list[dict], max_batch: int) -> None:
    head = f"{'model':<26}{'proto':>6}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}" \
           f"{'vs limit@1':>12}{f'vs limit@{max_batch}':>13}{'non-200':>9}"
    print(head)
    print("-" * len(head))
    for res in results:
        for (proto, conns), run in res["runs"].items():
            def fmt(v):
                return f"{v:9.2f}" if v is not None else f"{'-':>9}"
            busy = run.get("client_cpu_busy")
            note = "  (client-bound)" if busy is not None and busy > 0.9 else ""
            print(f"{res['model']:<26}{proto:>6}{conns:>5}{run['rps']:>10.0f}{fmt(run['p50_ms'])}{fmt(run['p90_ms'])}"
                  f"{fmt(run['p99_ms'])}{run['rps'] / res['limit@1']:>12.2f}"
                  f"{run['rps'] / res[f'limit@{max_batch}']:>13.2f}{run['non_200'] or 0:>9}{note}")
        print(f"{'':<26}in-process: batch 1 {res['limit@1']:.0f} samples/s "
              f"({1e3 / res['limit@1']:.3f} ms/forward; {res['limit_after@1']:.0f} after), "
              f"batch {max_batch} {res[f'limit@{max_batch}']:.0f} samples/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="seed_mlp,deep_mlp")
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-delay-ms", type=float, default=0.0)
    ap.add_argument("--port", type=int, default=18600)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (server and in-process limit)")
    ap.add_argument("--formats", default="torchscript",
                    help=f"comma-separated, of {','.join(FORMATS)}")
    ap.add_argument("--threads", type=int, default=0,
                    help="intra-op threads in process and in the server (SCRIPTSERVE_TORCH_THREADS); 0: "
                         "torch's default. AOTInductor's OpenMP kernels suffer most on a busy machine")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--protocols", default="http,grpc", help="http (wrk), grpc (scripts/grpc_load.py)")
    args = ap.parse_args()
    args.protocols = args.protocols.split(",")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["SCRIPTSERVE_TORCH_THREADS"] = str(args.threads)  # passed on to the server
    with tempfile.TemporaryDirectory(prefix="scriptserve-bench-") as tmp:
        results = [bench_model(m, f, args, Path(tmp)) for m in args.models.split(",")
                   for f in args.formats.split(",")]
    report(results, args.max_batch)
    if args.json:
        for res in results:
            res["runs"] = {f"{proto}@{conns}": run for (proto, conns), run in res["runs"].items()}
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
