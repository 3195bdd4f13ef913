"""Hostile sources against a real server process: each fails alone with 422; serving goes on."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.examples import scripted_classifier
from tests.support.compile_sources import write_source
from tests.support.server import LiveServer, task_children

pytestmark = pytest.mark.slow

X8 = json.dumps([{"shape": [1, 8], "dtype": "float32"}])
ROW = [[0.1] * 320]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("compile-live")
    # A token nothing else holds, so finding it anywhere would be this server's leak.
    live = LiveServer(
        folder / "store", token=f"tok-{secrets.token_hex(16)}",
        SCRIPTSERVE_COMPILE_TIMEOUT_S="20",
        SCRIPTSERVE_COMPILE_CPU_S="5",
        SCRIPTSERVE_COMPILE_MEMORY_BYTES=str(3 * 1024**3 // 2),
    )
    live.start()
    archive = folder / "clf.torchscript"
    scripted_classifier().save(str(archive))
    with open(archive, "rb") as fh:
        r = httpx.post(live.url + "/models", data={"name": "clf"}, files={"file": ("clf.torchscript", fh)},
                       headers=live.auth, timeout=60)
    assert r.status_code == 201, r.text
    try:
        yield live
    finally:
        live.stop()


def post_source(server: LiveServer, folder: Path, source: str, entrypoint: str) -> httpx.Response:
    path = write_source(folder, source)
    with open(path, "rb") as fh:
        return httpx.post(
            server.url + "/models",
            data={"name": source.replace("_", "-"), "entrypoint": entrypoint, "example_inputs": X8},
            files={"source": (path.name, fh)}, headers=server.auth, timeout=120,
        )


def assert_serving(server: LiveServer) -> None:
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    r = httpx.post(server.url + "/models/clf/predict", json={"inputs": ROW}, timeout=10)
    assert r.status_code == 200, r.text


def test_infinite_loop_is_killed_while_predictions_go_on(server, tmp_path):
    result: dict[str, httpx.Response] = {}
    upload = threading.Thread(target=lambda: result.setdefault(
        "r", post_source(server, tmp_path, "infinite_loop", "Spin")))
    upload.start()
    served = 0
    while upload.is_alive():
        assert_serving(server)
        served += 1
    upload.join()
    r = result["r"]
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] in {"compile_cpu_limit", "compile_timeout"}
    assert "was killed" in error["message"] and "loop forever" in error["message"]
    assert "limit of" in error["message"] and "raise SCRIPTSERVE_COMPILE_" in error["message"]
    assert served > 0
    assert server.proc is not None and task_children(server.proc.pid) == []
    assert httpx.get(server.url + "/models/infinite-loop", timeout=10).status_code == 404
    assert_serving(server)


def test_100_gb_allocation_fails_cleanly(server, tmp_path):
    r = post_source(server, tmp_path, "huge_allocation", "Hog")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "compile_memory_limit"
    assert "memory limit of 1536 MiB" in error["message"]
    assert "huge_allocation.py line 8: `self.buffer = torch.ones(25 * 1024**3)" in error["message"]
    assert_serving(server)


def test_admin_token_is_not_in_the_compile_environment(server, tmp_path):
    r = post_source(server, tmp_path, "token_search", "Snoop")
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert server.token not in message
    assert "token search found {}" in message  # nothing with TOKEN/SECRET/SCRIPTSERVE in its name
    assert "SCRIPTSERVE_" not in message
    assert "token_search.py line" in message
    assert_serving(server)
