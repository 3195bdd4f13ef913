"""``scriptserve serve --workers 2`` on a real port: one server to its clients (an upload
through any worker is served by all, one set of metrics, one generated admin token), a
worker that dies is restarted, and SIGTERM drains every worker."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from app.serving.runtime import load_model
from tests.support import fakes
from tests.support.server import LiveServer, children_of

pytestmark = pytest.mark.slow
X = [[0.25] * 320]


@pytest.fixture
def group(tmp_path: Path) -> Iterator[LiveServer]:
    # No admin token configured: the workers must agree on the one they generate.
    with LiveServer(tmp_path / "store", token="", SCRIPTSERVE_WORKERS="2", SCRIPTSERVE_ADMIN_TOKEN="",
                    SCRIPTSERVE_STORE_SYNC_S="1", SCRIPTSERVE_REQUEST_TIMEOUT_S="600",
                    SCRIPTSERVE_SHUTDOWN_GRACE_S="600") as live:
        wait_for_workers(live, 2)
        live.token = (tmp_path / "store" / ".admin_token").read_text().strip()
        yield live


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == want:
            return float(match.group(2))
    return 0.0


def wait_for_workers(server: LiveServer, count: int, restarts: int = 0) -> str:
    deadline = time.monotonic() + 180
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        if metric(text, "scriptserve_workers") == count and \
                metric(text, "scriptserve_worker_restarts_total") >= restarts:
            return text
        time.sleep(0.2)
    raise AssertionError(f"workers did not answer: {text[-2000:]}")


def workers(server: LiveServer) -> list[int]:
    assert server.proc is not None
    return children_of(server.proc.pid)


def test_an_upload_through_one_worker_is_served_by_all_with_one_set_of_metrics(group, tmp_path):
    assert len(workers(group)) == 2
    archive = fakes.save("classifier", tmp_path)
    for attempt in range(6):  # the generated token: every worker accepts it, whoever answers
        assert httpx.get(f"{group.url}/models", timeout=10).status_code == 200
        r = httpx.delete(f"{group.url}/models/none-{attempt}", headers=group.auth, timeout=30)
        assert r.status_code == 404, r.text  # authorized (401 otherwise), then not found
    r = group.upload("clf", archive)
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    expected = torch.jit.load(str(archive))(torch.tensor(X))
    count = 60
    for _ in range(count):  # new connections: the kernel spreads them over both workers
        answer = httpx.post(f"{group.url}/models/clf/versions/{version}/predict", json={"inputs": X},
                            timeout=600)
        assert answer.status_code == 200, answer.text
        assert torch.allclose(torch.tensor(answer.json()["outputs"]), expected, atol=1e-6)
    text = httpx.get(f"{group.url}/metrics", timeout=10).text
    own = httpx.get(f"{group.url}/metrics", params={"scope": "worker"}, timeout=10).text
    labels = {"model": "clf", "version": str(version), "status": "ok"}
    assert metric(text, "scriptserve_requests_total", **labels) == count
    assert metric(own, "scriptserve_requests_total", **labels) < count  # both workers served
    assert metric(text, "scriptserve_workers") == 2
    assert metric(text, "scriptserve_store_versions_served", model="clf") == 1
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                               capture_output=True, timeout=60)
        assert check.returncode == 0, check.stderr.decode() + check.stdout.decode()


def test_a_worker_that_dies_is_restarted_and_serves_again(group, tmp_path):
    archive = fakes.save("classifier", tmp_path)
    assert group.upload("clf", archive).status_code == 201
    before = workers(group)
    victim = before[0]
    subprocess.run(["kill", "-9", str(victim)], check=True)
    text = wait_for_workers(group, 2, restarts=1)
    assert metric(text, "scriptserve_worker_restarts_total") == 1
    after = workers(group)
    assert victim not in after and len(after) == 2
    for _ in range(20):
        r = httpx.post(f"{group.url}/models/clf/predict", json={"inputs": X}, timeout=600)
        assert r.status_code == 200, r.text


def test_sigterm_drains_every_worker_and_leaves_no_process(group, tmp_path):
    # Three forwards in turn per worker: a few seconds each, not the 20 s of slow_classifier,
    # which made the drain outlast the test's time limit on a loaded machine.
    archive = fakes.save("held_classifier", tmp_path)
    assert group.upload("held", archive, batching="off").status_code == 201
    pids = workers(group)
    # Both workers serve it before the load: a worker still loading it holds its requests
    # outside the in-flight count, and the first worker's answers then keep it below 6. Model
    # memory adds up over workers: twice the module's bytes once both hold it.
    held = load_model(archive, "cpu").parameter_bytes()  # what each worker reports
    deadline = time.monotonic() + 240
    while metric(httpx.get(f"{group.url}/metrics", timeout=30).text, "scriptserve_model_memory_bytes",
                 model="held", version="1", device="cpu") < 2 * held:
        assert time.monotonic() < deadline, "the second worker never served the model"
        time.sleep(0.2)
    results: list = []

    def call() -> None:
        try:
            results.append(httpx.post(f"{group.url}/models/held/predict", json={"inputs": X},
                                      timeout=600).status_code)
        except httpx.HTTPError as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while metric(httpx.get(f"{group.url}/metrics", timeout=30).text,
                 "scriptserve_requests_in_flight", model="held", version="1") < 6:
        assert time.monotonic() < deadline, "the six requests were never in flight together"
        time.sleep(0.05)
    assert group.proc is not None
    group.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(600)
    assert results == [200] * 6
    assert group.proc.wait(120) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_model_stats_describe_every_worker_and_a_silent_one_is_missing(group, tmp_path):
    """/models/{name}/stats and Triton's statistics (HTTP and gRPC) count the requests every
    worker served; a worker that does not answer (stopped) is left out, not an error."""
    archive = fakes.save("classifier", tmp_path)
    assert group.upload("clf", archive).status_code == 201
    count, bad = 40, 4
    for _ in range(count):  # new connections: the kernel spreads them over both workers
        r = httpx.post(f"{group.url}/models/clf/versions/1/predict", json={"inputs": X}, timeout=600)
        assert r.status_code == 200, r.text
    for _ in range(bad):
        r = httpx.post(f"{group.url}/models/clf/versions/1/predict", json={"inputs": [[1.0]]}, timeout=600)
        assert 400 <= r.status_code < 500, r.text
    deadline = time.monotonic() + 120  # a request is recorded just after its answer is sent
    while True:
        stats = httpx.get(f"{group.url}/models/clf/stats", timeout=30).json()
        total = sum(v["total"]["requests"] for v in stats["versions"])
        assert total <= count + bad, stats
        if total == count + bad or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (stats["workers"], stats["workers_missing"]) == (2, 0)
    (version,) = stats["versions"]
    for period in ("total", "window"):
        assert version[period]["by_status"] == {"ok": count, "client_error": bad, "server_error": 0,
                                                "rejected": 0}, version[period]
        assert version[period]["request_s"]["p50"] <= version[period]["request_s"]["max"]
    own = httpx.get(f"{group.url}/models/clf/stats", params={"scope": "worker"}, timeout=30).json()
    assert own["workers"] == 1 and own["versions"][0]["total"]["requests"] < count + bad  # both served
    triton = httpx.get(f"{group.url}/v2/models/clf/stats", timeout=30).json()["model_stats"][0]
    assert triton["inference_stats"]["success"]["count"] == count
    assert triton["inference_stats"]["fail"]["count"] == bad
    assert triton["inference_count"] == count  # one sample each
    all_models = httpx.get(f"{group.url}/v2/models/stats", timeout=30).json()["model_stats"]
    assert [s["inference_stats"]["success"]["count"] for s in all_models] == [count]
    grpcclient = pytest.importorskip("tritonclient.grpc")
    g = grpcclient.InferenceServerClient(group.grpc_url)
    try:
        via_grpc = g.get_inference_statistics("clf", as_json=True)["model_stats"][0]
        assert int(via_grpc["inference_stats"]["success"]["count"]) == count
    finally:
        g.close()

    stopped = workers(group)[0]
    subprocess.run(["kill", "-STOP", str(stopped)], check=True)
    try:  # the running worker takes every new connection from the shared socket
        stats = httpx.get(f"{group.url}/models/clf/stats", timeout=60)
        triton_answer = httpx.get(f"{group.url}/v2/models/clf/stats", timeout=60)
    finally:
        subprocess.run(["kill", "-CONT", str(stopped)], check=True)
    assert stats.status_code == 200, stats.text
    assert (stats.json()["workers"], stats.json()["workers_missing"]) == (1, 1)
    assert stats.json()["versions"][0]["total"]["requests"] < count + bad  # the other's share
    assert triton_answer.status_code == 200, triton_answer.text
