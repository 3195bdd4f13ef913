#!/usr/bin/env bash
# Throughput with metrics on vs. off: the example classifier, loopback wrk, alternating runs.
# Usage: scripts/bench_metrics_overhead.sh [rounds=3] [seconds=10] [connections=32]
# Each round starts a fresh server with SCRIPTSERVE_METRICS_ENABLED=true and one with false
# (same store, same settings otherwise; the order alternates), warms each for 2 s and runs wrk.
# Besides throughput it reports the server's CPU time per request, and the in-process cost of
# the recording calls alone. Other SCRIPTSERVE_* variables pass through to the server. Needs wrk
# (Debian: apt-get install wrk). Bounded: about rounds * 2 * (seconds + 6) s of load.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-10}
connections=${3:-32}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 2; }
scripts/setup_env.sh
py=.venv/bin/python
work=$(mktemp -d)
server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
$py - "$work/post.lua" <<'PY'
import json, sys
body = json.dumps({"inputs": [[round(0.01 * i, 2) for i in range(320)]]})
open(sys.argv[1], "w").write(
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    f"wrk.body = '{body}'\n")
PY

cpu_ticks() {  # user + system CPU of a process (all its threads), in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

run() {  # run <on|off|prepare> -> prints "requests/s cpu-us-per-request"
  local enabled=$1
  SCRIPTSERVE_METRICS_ENABLED=$([[ $enabled == on ]] && echo true || echo false) \
  SCRIPTSERVE_INSTALL_EXAMPLE=true SCRIPTSERVE_MODEL_STORE="$work/store" \
  SCRIPTSERVE_PORT=$port SCRIPTSERVE_LOG_LEVEL=warning SCRIPTSERVE_DEVICE=cpu \
    .venv/bin/scriptserve serve >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do
    curl -sf "$url/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -sf "$url/ready" >/dev/null || { tail -20 "$work/server.log" >&2; exit 1; }
  wrk -t2 -c"$connections" -d2s -s "$work/post.lua" "$url/models/classifier/predict" >/dev/null
  if [[ $enabled == prepare ]]; then
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
    server_pid=
    return
  fi
  local before after
  before=$(cpu_ticks "$server_pid")
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$work/post.lua" \
    "$url/models/classifier/predict" >"$work/wrk-$enabled.txt"
  after=$(cpu_ticks "$server_pid")
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  server_pid=
  if grep -q "Non-2xx" "$work/wrk-$enabled.txt"; then
    grep "Non-2xx" "$work/wrk-$enabled.txt" >&2; exit 1
  fi
  local rps p50 p99 total cpu_us
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk-$enabled.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/wrk-$enabled.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk-$enabled.txt")
  total=$(awk '/requests in/ {print $1}' "$work/wrk-$enabled.txt")
  # server CPU per request: much less sensitive to other tenants than throughput is
  cpu_us=$(awk -v t=$((after - before)) -v n="$total" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%.0f", t / hz * 1e6 / n}')
  echo "metrics $enabled: $rps req/s (p50 $p50, p99 $p99), server CPU $cpu_us us/request" >&2
  echo "$rps $cpu_us"
}

run prepare  # installs the example into the store, so that no measured run pays for it
on=() off=()
for r in $(seq "$rounds"); do  # on, off, off, on, on, off, ...: order effects cancel
  echo "round $r/$rounds" >&2
  if ((r % 2)); then
    on+=("$(run on)"); off+=("$(run off)")
  else
    off+=("$(run off)"); on+=("$(run on)")
  fi
done
$py - "${on[*]}" "${off[*]}" <<'PY'
import statistics, sys
def pairs(text):
    v = [float(x) for x in text.split()]
    return v[0::2], v[1::2]
(on, on_cpu), (off, off_cpu) = pairs(sys.argv[1]), pairs(sys.argv[2])
med = statistics.median
print(f"throughput : metrics on {med(on):.0f} req/s, off {med(off):.0f} req/s (medians), "
      f"difference {100 * (med(off) - med(on)) / med(off):+.1f}% (positive: metrics cost)")
print(f"server CPU : metrics on {med(on_cpu):.0f} us/request, off {med(off_cpu):.0f} us/request "
      f"(medians), difference {100 * (med(on_cpu) - med(off_cpu)) / med(off_cpu):+.1f}%")
print(f"runs req/s : on {[round(x) for x in on]}, off {[round(x) for x in off]}")
print(f"runs us/req: on {[round(x) for x in on_cpu]}, off {[round(x) for x in off_cpu]}")
PY
# The same cost without the noise of a shared machine: CPU time the recording adds per request
# (attribute + end-to-end record in the middleware + a one-request batch through the observer).
$py - <<'PY'
import time, timeit
from app.serving.batching import Job
from app.api.middleware.request_context import attribute
from app.telemetry.stats import OK, VersionStats

stats = VersionStats("m", 1)
t = time.monotonic()
job = Job(inputs=[], rows=1, key=None, future=None, loop=None, enqueued_at=t, deadline=t + 30)
job.started_at, job.finished_at, job.batch_size = t + 0.0002, t + 0.0012, 1

def one_request():
    scope = {}
    attribute(scope, stats)
    stats([job], 0.001)
    stats.in_flight -= 1
    stats.record_request(0.0015, OK, time.monotonic())

n = 200_000
per = min(timeit.repeat(one_request, number=n, repeat=5)) / n
print(f"recording cost: {per * 1e6:.2f} us of CPU per request (one-request batches, worst case)")
PY
