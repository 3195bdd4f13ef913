#!/usr/bin/env bash
# Check that a served archive runs from C++ without Python and gives the server's answer:
# build examples/cpp against the wheel's libtorch, upload the tutorial's classifier, download
# its archive, run it with torch::jit::load on a random input, and compare with the server's
# prediction on the same input (v2 binary, exact float32). Prints the max abs diff and times.
#
# Usage: scripts/cpp_check.sh              start a server on a free port with a temp store
#        scripts/cpp_check.sh --url URL    use a running server (token as for the CLI:
#                                          SCRIPTSERVE_ADMIN_TOKEN or the store's .admin_token)
#        scripts/cpp_check.sh --aoti       instead: the server compiles the classifier to an
#                                          AOTInductor package (format=aoti, a minute or more),
#                                          and scriptserve_run_aoti runs the downloaded .pt2
# CPP_BUILD_DIR (default build/cpp) keeps the build between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
url=""
aoti=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --url) url=${2:?--url needs a value}; shift 2 ;;
    --aoti) aoti=1; shift ;;
    *) echo "cpp_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
t0=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - $1) / 1000000 ))"; }

[[ -x .venv/bin/python ]] || scripts/setup_env.sh
py=.venv/bin/python
cli=(.venv/bin/scriptserve)
work=$(mktemp -d)
server_pid=""
name="cpp-check-$$"
cleanup() {
  if [[ -n $url && -z $server_pid ]]; then "${cli[@]}" delete "$name" --url "$url" >/dev/null 2>&1 || true; fi
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. build
build=${CPP_BUILD_DIR:-build/cpp}
prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
tb=$(date +%s%N)
if ! { cmake -S examples/cpp -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
       && cmake --build "$build" -j "$(nproc)"; } >"$work/build.log" 2>&1; then
  cat "$work/build.log" >&2
  echo "cpp_check: build failed" >&2
  exit 1
fi
build_ms=$(elapsed "$tb")

# 2. a server
if [[ -z $url ]]; then
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  url="http://127.0.0.1:$port"
  export SCRIPTSERVE_ADMIN_TOKEN="cpp-check-token"
  SCRIPTSERVE_MODEL_STORE="$work/store" SCRIPTSERVE_HOST=127.0.0.1 SCRIPTSERVE_PORT=$port \
    SCRIPTSERVE_DEVICE=cpu SCRIPTSERVE_INSTALL_EXAMPLE=false SCRIPTSERVE_LOG_LEVEL=warning \
    "${cli[@]}" serve >"$work/server.log" 2>&1 &
  server_pid=$!
  "$py" - "$url" <<'PY' || { cat "$work/server.log" >&2; exit 1; }
import sys, time, httpx
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        if httpx.get(sys.argv[1] + "/ready", timeout=1).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.1)
sys.exit("cpp_check: the server did not become ready")
PY
fi

# 3. model and input
"$py" - "$work" <<'PY'
import sys
import numpy as np
from app.examples import scripted_classifier
work = sys.argv[1]
scripted_classifier().save(f"{work}/classifier.torchscript")
import torch
from app.examples import Classification
torch.manual_seed(0)
torch.save(Classification().state_dict(), f"{work}/classifier-weights.pt")
x = np.random.default_rng(7).standard_normal((4, 320)).astype("<f4")
np.save(f"{work}/x.npy", x)
x.tofile(f"{work}/x.bin")
PY

# 4. upload, download, ask the server, run the archive from C++
if [[ -n $aoti ]]; then
  # the server compiles the eager classifier with AOTInductor (its compile process and limits)
  "$py" - "$url" "$name" "$work/classifier-weights.pt" <<'PY'
import os, sys, httpx
url, name, weights = sys.argv[1:]
token = os.environ.get("SCRIPTSERVE_ADMIN_TOKEN") or sys.exit("cpp_check --aoti: set SCRIPTSERVE_ADMIN_TOKEN")
with open(weights, "rb") as fh:
    r = httpx.post(f"{url}/models", headers={"Authorization": f"Bearer {token}"}, timeout=600,
                   data={"name": name, "architecture": "Classification", "format": "aoti"},
                   files={"weights": fh})
sys.exit(0 if r.status_code == 201 else f"cpp_check: format=aoti upload failed: {r.text[:2000]}")
PY
  archive="$work/downloaded.pt2"; runner="$build/scriptserve_run_aoti"
else
  "${cli[@]}" upload "$name" "$work/classifier.torchscript" --url "$url" --json >/dev/null
  archive="$work/downloaded.torchscript"; runner="$build/scriptserve_run"
fi
"${cli[@]}" download "$name" --url "$url" -o "$archive" --json >/dev/null
"${cli[@]}" predict "$name" --url "$url" -i "$work/x.npy" --v2 --json >"$work/server.json"
tr=$(date +%s%N)
"$runner" "$archive" "$work/x.bin:4x320" >"$work/cpp.json"
run_ms=$(elapsed "$tr")

# 5. compare
"$py" - "$work" "$build_ms" "$run_ms" "$(elapsed "$t0")" <<'PY'
import json, sys
import numpy as np
work, build_ms, run_ms, total_ms = sys.argv[1:]
server = json.load(open(f"{work}/server.json"))
cpp = json.load(open(f"{work}/cpp.json"))["outputs"]
served = [np.asarray(server[k], dtype=np.float64) for k in sorted(server)]
ran = [np.asarray(o["data"], dtype=np.float64).reshape(o["shape"]) for o in cpp]
assert len(served) == len(ran), f"{len(served)} server outputs, {len(ran)} from C++"
for s, r in zip(served, ran):
    assert s.shape == r.shape, f"shapes differ: server {s.shape}, C++ {r.shape}"
diff = max(float(np.max(np.abs(s - r))) for s, r in zip(served, ran))
print(f"outputs: {[list(r.shape) for r in ran]}")
print(f"max abs diff: {diff:.3g}")
print(f"time: build {int(build_ms) / 1000:.1f} s, C++ run {int(run_ms) / 1000:.2f} s, "
      f"total {int(total_ms) / 1000:.1f} s")
sys.exit(0 if diff <= 1e-5 else "cpp_check: C++ output differs from the server's")
PY
