"""Nothing lost on a real server: SIGTERM and deletion drain in-flight requests; a new
version swaps in under load with zero failed requests."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from tests.support import fakes
from tests.support.api import TOKEN
from tests.support.server import LiveServer

pytestmark = pytest.mark.slow
X = [[0.25] * 320]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    # A generous deadline: on a busy machine the slow model's passes take many seconds, and
    # what these tests check is that nothing is lost, not how fast.
    # The same for the shutdown grace: under load four slow passes can outlast the default 30 s.
    with LiveServer(tmp_path / "store", token=TOKEN, SCRIPTSERVE_REQUEST_TIMEOUT_S="600",
                    SCRIPTSERVE_SHUTDOWN_GRACE_S="600") as live:
        yield live


def held_requests(server: LiveServer, count: int) -> tuple[list[threading.Thread], list]:
    """Upload a model whose forward takes seconds; put ``count`` requests in flight."""
    r = server.upload("held", server.archive, batching="on",  # type: ignore[attr-defined]
                     max_batch_size="64")
    assert r.status_code == 201, r.text
    results: list = []

    def call() -> None:
        try:
            results.append(httpx.post(f"{server.url}/models/held/predict", json={"inputs": X},
                                      timeout=600))
        except httpx.HTTPError as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        info = httpx.get(f"{server.url}/models/held", timeout=10).json()["versions"][0]
        if info["in_flight"] == count:
            return threads, results
        time.sleep(0.02)
    raise AssertionError("requests did not arrive")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return fakes.save("slow_classifier", tmp_path)


def test_sigterm_answers_every_in_flight_request_before_exit(server, archive):
    server.archive = archive  # type: ignore[attr-defined]
    threads, results = held_requests(server, 4)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(600)
    assert [getattr(r, "status_code", r) for r in results] == [200] * 4
    expected = torch.jit.load(str(archive))(torch.tensor(X))
    for r in results:
        assert torch.allclose(torch.tensor(r.json()["outputs"]), expected, atol=1e-6)
    assert server.proc.wait(60) in (0, -signal.SIGTERM)


def test_deleting_a_version_answers_its_in_flight_requests_first(server, archive):
    server.archive = archive  # type: ignore[attr-defined]
    threads, results = held_requests(server, 4)
    r = httpx.delete(f"{server.url}/models/held/versions/1", headers=server.auth, timeout=600)
    assert r.status_code == 200
    for t in threads:
        t.join(600)
    assert [getattr(r, "status_code", r) for r in results] == [200] * 4
    assert httpx.get(f"{server.url}/models/held", timeout=10).status_code == 404


def test_new_version_swaps_in_under_load_with_zero_failed_requests(server, tmp_path):
    first, second = fakes.save("classifier", tmp_path, 0), fakes.save("classifier", tmp_path, 1)
    assert server.upload("clf", first).status_code == 201
    stop = threading.Event()
    seen: list[tuple[int, int | None]] = []

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set() and len(seen) < 20_000:
                r = http.post(f"{server.url}/models/clf/predict", json={"inputs": X})
                seen.append((r.status_code, r.json().get("version")))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for t in clients:
        t.start()
    while len(seen) < 20:
        time.sleep(0.01)
    assert server.upload("clf", second).status_code == 201
    r = httpx.delete(f"{server.url}/models/clf/versions/1", headers=server.auth, timeout=600)
    assert r.status_code == 200
    count = len(seen)
    while len(seen) < count + 20:
        time.sleep(0.01)
    stop.set()
    for t in clients:
        t.join(600)
    assert {status for status, _ in seen} == {200}, [s for s in seen if s[0] != 200][:5]
    assert {version for _, version in seen} == {1, 2}
    assert seen[-1][1] == 2
