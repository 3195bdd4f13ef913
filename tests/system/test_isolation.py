"""A model cannot take the server down: loads that hang or allocate without bound, forwards
that never return or run out of memory, and SIGTERM while a model is stuck. Every test serves
a healthy model beside the hostile one and checks that /health answers within 100 ms and the
healthy model keeps answering throughout (``tests/support/watch.py``)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from app.store import ARCHIVE_FILE, ModelStore
from tests.support import fakes, spinners
from tests.support.api import TOKEN
from tests.support.server import LiveServer, children_of
from tests.support.watch import Watch, cpu_ticks

pytestmark = pytest.mark.slow
X = [[0.5] * 320]
LIMITS = {
    "SCRIPTSERVE_HOST_MEMORY_BYTES": str(3 * 1024**3),
    "SCRIPTSERVE_HOST_LOAD_TIMEOUT_S": "8",
    "SCRIPTSERVE_HOST_FORWARD_GRACE_S": "1",
    "SCRIPTSERVE_TRIAL_TIMEOUT_S": "8",
}


def host_pid(server: LiveServer, label: str) -> int | None:
    """The model host process serving ``label`` (its command line names it)."""
    assert server.proc is not None
    for pid in children_of(server.proc.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"app.hosting.child" in argv and label.encode() in argv:
            return pid
    return None


def new_host(server: LiveServer, label: str, old: int | None, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = host_pid(server, label)
        if pid is not None and pid != old:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"no new host for {label}")


def group_ticks(server: LiveServer) -> int:
    assert server.proc is not None
    total = 0
    for pid in [server.proc.pid, *children_of(server.proc.pid)]:
        with contextlib.suppress(OSError):  # a process that just ended
            total += cpu_ticks(pid)
    return total


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("isolation")


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[LiveServer]:
    with LiveServer(folder / "store", token=TOKEN, **LIMITS) as live:
        assert live.upload("good", fakes.save("classifier", folder)).status_code == 201
        yield live


def test_a_forward_that_never_returns_is_answered_504_and_its_host_killed(server, folder):
    r = server.upload("loops", spinners.save(spinners.LoopsOnNegative(), folder))
    assert r.status_code == 201, r.text
    with Watch(server.url, "good", X) as watch:
        old = host_pid(server, "loops")
        start = time.monotonic()
        r = httpx.post(f"{server.url}/models/loops/predict?timeout_s=1", json={"inputs": [-1e7, -2.0]},
                       timeout=30)
        assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded", r.text
        assert time.monotonic() - start < 5
        new_host(server, "loops", old)  # killed at deadline + grace (1 s + 1 s), then restarted
        assert not Path(f"/proc/{old}").exists()
        r = httpx.post(f"{server.url}/models/loops/predict", json={"inputs": [1.0, 2.0]}, timeout=60)
        assert r.status_code == 200 and r.json()["outputs"] == [2.0, 3.0], r.text
        time.sleep(0.5)
        before = group_ticks(server)
        time.sleep(2)
        used = group_ticks(server) - before  # nothing spins: the watcher's requests only
        print(f"CPU of the server and its hosts over 2 s after the restart: {used} ticks")
        assert used < 100  # a spinning forward alone would be about 200 (a core, 100 ticks/s)
    watch.check()


def test_a_forward_over_the_hosts_memory_limit_fails_alone(server, folder):
    r = server.upload("alloc", spinners.save(spinners.AllocatesOnHuge(), folder))
    assert r.status_code == 201, r.text
    with Watch(server.url, "good", X) as watch:
        old = host_pid(server, "alloc")
        r = httpx.post(f"{server.url}/models/alloc/predict", json={"inputs": [1e7, 1.0]}, timeout=30)
        assert r.status_code == 422 and r.json()["error"]["code"] == "model_error", r.text
        assert "memory" in r.json()["error"]["message"]
        new_host(server, "alloc", old)  # started afresh
        r = httpx.post(f"{server.url}/models/alloc/predict", json={"inputs": [1.0, 2.0]}, timeout=30)
        assert r.status_code == 200 and r.json()["outputs"] == [2.0, 3.0], r.text
    watch.check()


def commit(store_dir: Path, name: str, archive: Path) -> None:
    """Put a version straight into the store, as if it had passed its checks by chance."""
    store = ModelStore(store_dir)
    staging = store.new_staging_dir()
    shutil.copyfile(archive, staging / ARCHIVE_FILE)
    store.commit(staging, name, None, {"device": "cpu", "created_at": "2026-01-01T00:00:00+00:00"})


def test_versions_whose_loads_hang_or_blow_the_memory_limit_are_quarantined(tmp_path):
    server = LiveServer(tmp_path / "store", token=TOKEN, **LIMITS)
    server.start()
    try:
        assert server.upload("good", fakes.save("classifier", tmp_path)).status_code == 201
        with Watch(server.url, "good", X) as watch:
            for _ in range(2):  # the random loop: passes or fails, never hangs the server
                r = server.upload("coin", spinners.spin_setstate(tmp_path, "coin.pt", randomly=True))
                assert r.status_code in (201, 422), r.text
            # 4 GiB at load passes the trial's limit (8 GiB) but not the host's (3 GiB)
            r = server.upload("hog", spinners.alloc_setstate(tmp_path))
            assert r.status_code == 422 and r.json()["error"]["code"] == "model_load_failed", r.text
            r = httpx.delete(f"{server.url}/models/coin", headers=server.auth, timeout=60)
            assert r.status_code in (200, 404), r.text  # a coin that came up heads: not counted below
        watch.check()
        server.stop()
        commit(server.store, "spin", spinners.spin_setstate(tmp_path))
        commit(server.store, "alloc", spinners.alloc_setstate(tmp_path))

        server.start(wait_ready=False)
        server.wait("/health")  # listening; loading the store (two tries of each bad version)
        with Watch(server.url, None, X) as watch:
            server.wait("/ready", timeout_s=120)
        # start-up: the server's own loading (and host starts) share 2 cores with /health
        watch.check(health_limit_s=0.25)
        with Watch(server.url, "good", X) as watch:
            for name in ("spin", "alloc"):
                r = httpx.get(f"{server.url}/models/{name}", timeout=10)
                assert r.status_code == 404 and "quarantined" in r.json()["error"]["message"], r.text
            metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
            assert "scriptserve_quarantined_versions 2.0" in metrics
            log = server.log_path.read_text()
            assert "model version spin/1 is quarantined" in log
            hosts_started = log.count("model host spin-v1 started")
            assert hosts_started == 2  # two tries, then never again
        watch.check()

        server.restart()  # the quarantine is in the store: no third try, no wait
        with Watch(server.url, "good", X) as watch:
            assert server.log_path.read_text().count("model host spin-v1 started") == hosts_started
            r = httpx.post(f"{server.url}/models/alloc/versions/1/retry", headers=server.auth, timeout=120)
            assert r.status_code == 422 and "quarantined" in r.json()["error"]["message"], r.text
            r = httpx.delete(f"{server.url}/models/spin/versions/1", headers=server.auth, timeout=30)
            assert r.status_code == 200, r.text
            r = httpx.get(f"{server.url}/models/spin", timeout=10)
            assert r.status_code == 404 and "quarantined" not in r.text
            assert "scriptserve_quarantined_versions 1.0" in httpx.get(f"{server.url}/metrics").text
        watch.check()
    finally:
        server.stop()


def test_sigterm_with_a_stuck_forward_exits_within_the_grace_period(tmp_path):
    grace = 4.0
    server = LiveServer(tmp_path / "store", token=TOKEN, SCRIPTSERVE_SHUTDOWN_GRACE_S=str(grace),
                        SCRIPTSERVE_REQUEST_TIMEOUT_S="120", **LIMITS)
    server.start()
    try:
        assert server.upload("loops", spinners.save(spinners.LoopsOnNegative(), tmp_path)).status_code == 201
        host = host_pid(server, "loops")
        stuck = threading.Thread(target=lambda: httpx.post(
            f"{server.url}/models/loops/predict", json={"inputs": [-1e7]}, timeout=120))
        stuck.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/models/loops", timeout=10).json()["versions"][0]["in_flight"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        assert server.proc is not None
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(60)
        took = time.monotonic() - start
        print(f"SIGTERM to exit with a stuck forward: {took:.2f} s (grace {grace:g} s)")
        assert took < grace
        assert code in (0, -signal.SIGTERM)
        assert host is not None and not Path(f"/proc/{host}").exists()
        stuck.join(30)
    finally:
        server.stop()


def test_an_inline_server_still_serves(tmp_path):
    """``model_hosts=inline`` keeps today's in-process behaviour (the opt-out)."""
    with LiveServer(tmp_path / "store", token=TOKEN, SCRIPTSERVE_MODEL_HOSTS="inline") as server:
        assert server.upload("good", fakes.save("classifier", tmp_path)).status_code == 201
        r = httpx.post(f"{server.url}/models/good/predict", json={"inputs": X}, timeout=30)
        assert r.status_code == 200
        assert server.proc is not None and host_pid(server, "good") is None
        expected = torch.jit.load(str(fakes.save("classifier", tmp_path)))(torch.tensor(X))
        assert torch.allclose(torch.tensor(r.json()["outputs"]), expected, atol=1e-6)
