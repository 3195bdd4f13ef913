"""A local stand-in for a KServe pod: the image's entrypoint serving a read-only /mnt/models.

What KServe and the kubelet do, done here by hand: the model files in a folder nobody may
write (``chmod a-w``; as root that does not stop writes, so the folder is also compared
before and after), the admin token from a mounted secret file, probes on the v2 health
endpoints, ``$PORT`` as Knative sets it, and SIGTERM while 32 clients load the server.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from torch import nn

from tests.support import fakes
from tests.support.server import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
X = [[0.25] * 320]
CLIENTS = 32


class Spin(nn.Module):
    """The tutorial's classifier after about 0.1 s of matrix products per forward pass, so
    that requests are in flight when SIGTERM comes."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = fakes.BUILDERS["classifier"]()
        self.register_buffer("spin", torch.eye(128) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = self.spin
        for _ in range(2000):
            acc = torch.mm(acc, self.spin)
        return self.inner(x) + 0.0 * acc[0, 0]


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root``: size, mode, mtime (ns); what any write would change."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mode, p.stat().st_mtime_ns)
            for p in [root, *sorted(root.rglob("*"))]}


def read_only(root: Path) -> Path:
    """``chmod a-w`` everything under ``root`` (the kubelet mounts /mnt/models read-only)."""
    for path in [*root.rglob("*"), root]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return root


class PodStandIn:
    """``docker-entrypoint.sh scriptserve serve --model-dir ...`` as the container runs it."""

    def __init__(self, work: Path, model_dir: Path, name: str, port_var: str = "SCRIPTSERVE_PORT",
                 **env: str) -> None:
        self.port = free_port()
        self.token_file = work / "admin_token"
        self.token_file.write_text("pod-admin-token\n")
        (work / "tmp").mkdir(exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTSERVE_") and k != "PORT"}
        self.env.update({
            port_var: str(self.port),
            "TMPDIR": str(work / "tmp"),  # an emptyDir on Kubernetes
            "SCRIPTSERVE_HOST": "127.0.0.1",
            "SCRIPTSERVE_GRPC_PORT": str(free_port()),
            "SCRIPTSERVE_ADMIN_TOKEN_FILE": str(self.token_file),
            "SCRIPTSERVE_DEVICE": "cpu",
            "SCRIPTSERVE_MODEL_STORE": str(work / "must-not-be-used"),
            "SCRIPTSERVE_REQUEST_TIMEOUT_S": "120",
            **env,
        })
        self.args = [str(ENTRYPOINT), sys.executable, "-m", "app.cli", "serve",
                     "--model-dir", str(model_dir), "--model-name", name]
        self.log_path = work / f"pod-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log)

    def probe(self, path: str) -> int | None:
        """One probe as the kubelet sends it: the status, or None while nothing listens."""
        try:
            return httpx.get(self.url + path, timeout=2).status_code
        except httpx.HTTPError:
            return None

    def probes_until_ready(self, timeout_s: float = 120) -> list[int | None]:
        seen: list[int | None] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()[-3000:]}")
            seen.append(self.probe("/v2/health/ready"))
            if seen[-1] == 200:
                return seen
            time.sleep(0.05)
        raise AssertionError(f"never ready: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def pods() -> Iterator[list[PodStandIn]]:
    started: list[PodStandIn] = []
    yield started
    for pod in started:
        pod.stop()


def test_single_file_layout_ready_only_after_load_and_never_writes_there(tmp_path, pods):
    models = tmp_path / "mnt-models"
    models.mkdir()
    archive = fakes.save("classifier", models)  # storageUri naming one file
    read_only(models)
    before = snapshot(models)
    pod = PodStandIn(tmp_path, archive, "clf")
    pods.append(pod)
    pod.start()
    seen = pod.probes_until_ready()
    # the trial load runs in a separate process: the server answers 503 meanwhile
    assert 503 in seen and seen.index(503) < seen.index(200), seen
    assert pod.probe("/v2/health/live") == 200
    meta = httpx.get(f"{pod.url}/v2/models/clf", timeout=10).json()
    assert meta["versions"] == ["1"] and meta["platform"]
    r = httpx.post(f"{pod.url}/v2/models/clf/infer", timeout=30, json={"inputs": [
        {"name": meta["inputs"][0]["name"], "shape": [1, 320], "datatype": "FP32", "data": X[0]}]})
    assert r.status_code == 200, r.text
    expected = torch.jit.load(str(archive))(torch.tensor(X)).flatten()
    assert torch.allclose(torch.tensor(r.json()["outputs"][0]["data"]), expected, atol=1e-6)
    token = {"Authorization": f"Bearer {pod.token_file.read_text().strip()}"}
    with open(archive, "rb") as fh:
        up = httpx.post(f"{pod.url}/models", data={"name": "clf"}, files={"file": fh}, headers=token,
                        timeout=30)
    assert up.status_code == 405, up.text
    assert "read-only model directory" in up.json()["error"]["message"]
    assert not (tmp_path / "must-not-be-used").exists()  # SCRIPTSERVE_MODEL_STORE is not used
    pod.stop()
    assert snapshot(models) == before
    assert list((tmp_path / "tmp").iterdir()) == []  # the private store went at shutdown


def test_version_folders_on_dollar_port(tmp_path, pods):
    models = tmp_path / "mnt-models"
    for version in (1, 2):
        (models / str(version)).mkdir(parents=True)
        fakes.save("classifier", models / str(version), version)
    read_only(models)
    before = snapshot(models)
    pod = PodStandIn(tmp_path, models, "clf", port_var="PORT")  # Knative sets $PORT
    pods.append(pod)
    pod.start()
    pod.probes_until_ready()
    meta = httpx.get(f"{pod.url}/v2/models/clf", timeout=10).json()
    assert meta["versions"] == ["1", "2"]
    for version in (1, 2):
        r = httpx.post(f"{pod.url}/v2/models/clf/versions/{version}/infer", timeout=30, json={"inputs": [
            {"name": meta["inputs"][0]["name"], "shape": [1, 320], "datatype": "FP32", "data": X[0]}]})
        assert r.status_code == 200 and r.json()["model_version"] == str(version), r.text
    pod.stop()
    assert snapshot(models) == before


def test_sigterm_under_32_clients_drains_with_zero_failed_requests(tmp_path, pods):
    """Kubernetes' order: the endpoint leaves the Service (no new requests), then SIGTERM
    (here at once: the preStop sleep is what gives the Service time to stop routing)."""
    models = tmp_path / "mnt-models"
    models.mkdir()
    torch.jit.script(Spin().eval()).save(str(models / "model.pt"))
    read_only(models)
    # the grace period is generous: on a loaded machine a slow pass must not turn the test red
    pod = PodStandIn(tmp_path, models, "spin", SCRIPTSERVE_MAX_BATCH_SIZE="64",
                     SCRIPTSERVE_SHUTDOWN_GRACE_S="600")
    pods.append(pod)
    pod.start()
    pod.probes_until_ready()
    routed = threading.Event()
    routed.set()
    outcomes: list[tuple[float, float, int | str]] = []  # (sent, answered, status or error)

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while routed.is_set() and len(outcomes) < 5000:
                sent = time.monotonic()
                try:
                    status: int | str = http.post(f"{pod.url}/models/spin/predict",
                                                  json={"inputs": X}).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                outcomes.append((sent, time.monotonic(), status))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    load_until = time.monotonic() + 120  # bounded load: until every client had two answers
    while len(outcomes) < 2 * CLIENTS and time.monotonic() < load_until:
        time.sleep(0.05)
    routed.clear()  # the endpoint is removed: clients start no new request here
    assert pod.proc is not None
    sigterm = time.monotonic()
    pod.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    exit_code = pod.proc.wait(60)
    drained_s = time.monotonic() - sigterm
    in_flight = sum(1 for sent, answered, _ in outcomes if sent < sigterm < answered)
    failed = [o for o in outcomes if o[2] != 200]
    print(f"\n{len(outcomes)} requests from {CLIENTS} clients, {in_flight} in flight at SIGTERM, "
          f"{len(failed)} failed; exit {exit_code} {drained_s:.2f} s after SIGTERM")
    assert failed == [], failed[:5]
    assert in_flight > 0 and len(outcomes) >= 2 * CLIENTS
    assert exit_code in (0, -signal.SIGTERM)
    assert drained_s < 600  # inside the grace period (the base Deployment's 30 s: docs/kubernetes.md)


def test_two_workers_share_one_private_store(tmp_path, pods):
    """``--workers 2`` on a model folder: one private store for the group (each version
    committed once, by whichever worker comes first), both workers serve every version."""
    models = tmp_path / "mnt-models"
    for version in (1, 2):
        (models / str(version)).mkdir(parents=True)
        fakes.save("classifier", models / str(version), version)
    read_only(models)
    pod = PodStandIn(tmp_path, models, "clf", SCRIPTSERVE_WORKERS="2")
    pods.append(pod)
    pod.start()
    pod.probes_until_ready()
    scratch = [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("scriptserve-store-")]
    assert len(scratch) == 1, scratch
    for i in range(40):  # a fresh connection each time: both workers answer
        version = 1 + i % 2
        r = httpx.post(f"{pod.url}/models/clf/versions/{version}/predict", json={"inputs": X},
                       timeout=30, headers={"Connection": "close"})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60  # a sibling busy past the 2 s scrape timeout is "missing"
    while True:
        workers = httpx.get(f"{pod.url}/metrics", timeout=30).text
        both = "scriptserve_workers 2.0" in workers and "scriptserve_workers_missing 0.0" in workers
        if both or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert both, [line for line in workers.splitlines() if line.startswith("scriptserve_workers")]
    pod.stop()
    assert list((tmp_path / "tmp").iterdir()) == []  # the supervisor removed the shared store
