#!/usr/bin/env bash
# Smoke-test the ScriptServe image for real: run it with a named volume for the store and the
# admin token from a mounted secret file; inside the running container, upload a TorchScript
# model (401 without the token, 201 with it) and predict; then restart the container, and then
# replace it with a new one on the same volume (an upgrade), and check that the model answers
# with the same output each time. Prints the image size and the cold-start time (start to ready).
#
# Usage: scripts/container_smoke.sh [IMAGE]    (no IMAGE: build scriptserve:smoke from this tree)
# Env:   CONTAINER_ENGINE  podman or docker (default: podman if installed, else docker)
#        SMOKE_BUILD_OPTS  extra build options, e.g. "--build-context wheels=/opt/wheels"
#        SMOKE_TIMEOUT_S   seconds to wait for /ready after each start (120)
# Prints "PASS: ..." (exit 0) or "FAIL: ..." (exit 1, with the container's last log lines).
set -euo pipefail
cd "$(dirname "$0")/.."

engine=${CONTAINER_ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
timeout_s=${SMOKE_TIMEOUT_S:-120}
image=${1:-}
base_name=scriptserve-smoke-$$
name=$base_name
volume=$base_name
tmp=$(mktemp -d)
started=0

say() { echo "[container_smoke] $*" >&2; }
fail() {
  echo "FAIL: $*"
  if ((started)); then echo "--- last log lines of $name"; "$engine" logs --tail 30 "$name" 2>&1 || true; fi
  exit 1
}
cleanup() {
  # One name per call: a missing name makes `rm -f` skip the others on some podman versions.
  local c
  for c in "$base_name" "$base_name-kserve"; do "$engine" rm -f -v "$c" >/dev/null 2>&1 || true; done
  "$engine" volume rm -f "$volume" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [[ -z $image ]]; then
  image=scriptserve:smoke
  read -r -a build_opts <<<"${SMOKE_BUILD_OPTS:-}"
  # podman writes OCI images by default, and the OCI format has no HEALTHCHECK.
  [[ $engine == podman ]] && build_opts+=(--format docker)
  say "$engine build -t $image ${build_opts[*]} ."
  "$engine" build "${build_opts[@]}" -t "$image" . >"$tmp/build.log" 2>&1 \
    || { tail -n 30 "$tmp/build.log"; fail "$engine build"; }
fi
size=$("$engine" image inspect -f '{{.Size}}' "$image") || fail "no image $image"

# The token lives only in a file mounted read-only into the container (never on a command line).
token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
printf '%s\n' "$token" >"$tmp/admin_token"
chmod 0444 "$tmp/admin_token" # the container user (uid 10001) must read it
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

start() {
  "$engine" run -d --name "$name" -p "127.0.0.1:$port:8000" -v "$volume:/models" \
    -v "$tmp/admin_token:/run/secrets/admin_token:ro" \
    -e SCRIPTSERVE_ADMIN_TOKEN_FILE=/run/secrets/admin_token "$image" >/dev/null 2>>"$tmp/engine.log" \
    || fail "$engine run $image"
  started=1
}
wait_ready() { # until GET /ready answers 200 on the published port
  local end=$((SECONDS + timeout_s))
  while ((SECONDS < end)); do
    curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/ready" 2>/dev/null && return 0
    [[ $("$engine" inspect -f '{{.State.Running}}' "$name" 2>/dev/null) == true ]] \
      || fail "container stopped before /ready answered"
    sleep 0.2
  done
  fail "no 200 from /ready within ${timeout_s}s"
}
inside() { # MODE: run deploy-independent checks with the container's own Python and httpx
  "$engine" exec -i "$name" python -W ignore - "$1" <<'PY'
import json
import os
import sys

import httpx

base = f"http://127.0.0.1:{os.environ.get('SCRIPTSERVE_PORT', '8000')}"
client = httpx.Client(base_url=base, timeout=60)
inputs = [[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]]


def expect(response, status):
    if response.status_code != status:
        sys.exit(f"{response.request.method} {response.request.url.path}: expected {status}, "
                 f"got {response.status_code} {response.text[:300]}")
    return response.json()


if sys.argv[1] == "upload":
    import torch

    torch.manual_seed(0)
    net = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()))
    net.save("/tmp/smoke.torchscript")
    with open("/tmp/smoke.torchscript", "rb") as fh:
        archive = fh.read()
    form = {"name": "smoke"}
    error = expect(client.post("/models", data=form, files={"file": archive}), 401)["error"]
    assert error["code"] and error["message"], error
    with open(os.environ["SCRIPTSERVE_ADMIN_TOKEN_FILE"]) as fh:
        auth = {"Authorization": f"Bearer {fh.read().strip()}"}
    expect(client.post("/models", data=form, files={"file": archive}, headers=auth), 201)
    os.remove("/tmp/smoke.torchscript")
versions = expect(client.get("/models/smoke"), 200)
outputs = expect(client.post("/models/smoke/predict", json={"inputs": inputs}), 200)["outputs"]
assert len(outputs) == 2 and len(outputs[0]) == 3, outputs
print(json.dumps({"outputs": outputs, "versions": len(versions["versions"])}, sort_keys=True))
PY
}

say "cold start of $image (port $port)"
t0=$(now); start; wait_ready; cold=$(since "$t0")
[[ $("$engine" exec "$name" id -u) == 10001 ]] || fail "the server does not run as uid 10001"
first=$(inside upload) || fail "upload and predict inside the container"
from_host=$(curl -fsS -m 10 "http://127.0.0.1:$port/models/smoke/predict" -H 'content-type: application/json' \
  -d '{"inputs": [[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]]}' \
  | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["outputs"]))') \
  || fail "predict through the published port"
[[ $from_host == "$(python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])["outputs"]))' "$first")" ]] \
  || fail "host and container disagree: $from_host vs $first"
if [[ $engine == podman ]]; then
  podman healthcheck run "$name" >/dev/null 2>>"$tmp/engine.log" || fail "the image's HEALTHCHECK says unhealthy"
fi

say "restart the container"
t0=$(now); "$engine" restart -t 30 "$name" >/dev/null 2>>"$tmp/engine.log" || fail "$engine restart"
wait_ready; restart=$(since "$t0")
after_restart=$(inside predict) || fail "predict after restart"
[[ $after_restart == "$first" ]] || fail "after restart: $after_restart, before: $first"

say "replace the container (same volume: an upgrade)"
if "$engine" logs "$name" 2>&1 | grep -qF "$token"; then fail "the admin token appears in the logs"; fi
{ "$engine" stop -t 30 "$name" && "$engine" rm "$name"; } >/dev/null 2>>"$tmp/engine.log" || fail "$engine stop/rm"
start; wait_ready
after_replace=$(inside predict) || fail "predict in a new container on the same volume"
[[ $after_replace == "$first" ]] || fail "after replace: $after_replace, before: $first"
if "$engine" logs "$name" 2>&1 | grep -qF "$token"; then fail "the admin token appears in the logs"; fi

say "KServe mode: a read-only /mnt/models with version folders, read-only root filesystem"
mkdir -p "$tmp/mnt-models/1"
"$engine" exec "$name" python -W ignore -c '
import torch
torch.manual_seed(0)
torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())).save("/tmp/kserve.pt")' \
  || fail "build the KServe model inside the container"
"$engine" cp "$name:/tmp/kserve.pt" "$tmp/mnt-models/1/model.pt" 2>>"$tmp/engine.log" || fail "$engine cp"
chmod -R a+rX,a-w "$tmp/mnt-models"
"$engine" rm -f "$name" >/dev/null 2>>"$tmp/engine.log"
name=$base_name-kserve
kport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
t0=$(now)
"$engine" run -d --name "$name" -p "127.0.0.1:$kport:8080" --read-only --tmpfs /tmp:rw,size=256m \
  -v "$tmp/mnt-models:/mnt/models:ro" -v "$tmp/admin_token:/run/secrets/admin_token:ro" \
  -e SCRIPTSERVE_ADMIN_TOKEN_FILE=/run/secrets/admin_token -e SCRIPTSERVE_PORT=8080 -e SCRIPTSERVE_GRPC_PORT=0 \
  -e TMPDIR=/tmp "$image" scriptserve serve --model-dir=/mnt/models --model-name=smoke \
  >/dev/null 2>>"$tmp/engine.log" || fail "$engine run (KServe mode)"
end=$((SECONDS + timeout_s))
until curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$kport/v2/health/ready" 2>/dev/null; do
  ((SECONDS < end)) || fail "KServe mode: no 200 from /v2/health/ready within ${timeout_s}s"
  [[ $("$engine" inspect -f '{{.State.Running}}' "$name" 2>/dev/null) == true ]] \
    || fail "KServe mode: the container stopped before /v2/health/ready answered"
  sleep 0.2
done
kserve_ready=$(since "$t0")
curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$kport/v2/health/live" || fail "KServe mode: /v2/health/live"
input=$(curl -fsS -m 10 "http://127.0.0.1:$kport/v2/models/smoke" \
  | python3 -c 'import json, sys; m = json.load(sys.stdin); assert m["versions"] == ["1"], m; print(m["inputs"][0]["name"])') \
  || fail "KServe mode: v2 model metadata"
kserve_out=$(curl -fsS -m 10 "http://127.0.0.1:$kport/v2/models/smoke/infer" -H 'content-type: application/json' \
  -d '{"inputs": [{"name": "'"$input"'", "shape": [2, 4], "datatype": "FP32", "data": [0.5, -1.0, 2.0, 0.25, 1.0, 0.0, -0.5, 3.0]}]}' \
  | python3 -c 'import json, sys; o = json.load(sys.stdin)["outputs"][0]; assert o["shape"] == [2, 3], o; print(json.dumps([round(v, 5) for v in o["data"]]))') \
  || fail "KServe mode: v2 infer"
[[ $kserve_out == "$(python3 -c 'import json, sys; print(json.dumps([round(v, 5) for row in json.loads(sys.argv[1])["outputs"] for v in row]))' "$first")" ]] \
  || fail "KServe mode answers $kserve_out, the uploaded model $first"
status=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$kport/models" \
  -H "Authorization: Bearer $token" -F name=other -F "file=@$tmp/mnt-models/1/model.pt") || true
[[ $status == 405 ]] || fail "KServe mode: an upload answered $status, not 405"
t0=$(now); "$engine" stop -t 30 "$name" >/dev/null 2>>"$tmp/engine.log" || fail "$engine stop (KServe mode)"
kserve_stop=$(since "$t0")
code=$("$engine" inspect -f '{{.State.ExitCode}}' "$name")
[[ $code == 0 ]] || fail "KServe mode: exit code $code after SIGTERM"

echo "image $image: $(numfmt --to=si "$size")B; cold start to ready ${cold}s; restart to ready ${restart}s"
echo "KServe mode: ready in ${kserve_ready}s, stopped in ${kserve_stop}s"
echo "PASS: $image served model 'smoke' ($first) with the admin token from a file, after a restart and in a new container on the same volume, and from a read-only /mnt/models in KServe mode"
