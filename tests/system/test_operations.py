"""Uploads as operations on a real server: 202 at once, stages while it runs, the result or
the error at the end, cancel kills the compile process and stores nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.examples import scripted_classifier
from tests.support.api import TOKEN
from tests.support.compile_sources import write_source
from tests.support.server import LiveServer, task_children

pytestmark = pytest.mark.slow
ASYNC = {"Prefer": "respond-async"}
X8 = json.dumps([{"shape": [1, 8], "dtype": "float32"}])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("operations-live")
    with LiveServer(folder / "store", token=TOKEN, SCRIPTSERVE_COMPILE_TIMEOUT_S="60",
                    SCRIPTSERVE_COMPILE_CPU_S="6") as live:
        yield live


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("operations-archive") / "clf.torchscript"
    scripted_classifier().save(str(path))
    return path


def post(server: LiveServer, data: dict, files: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(server.url + "/models", data=data, files=files, timeout=120,
                      headers={**server.auth, **(headers or {})})


def post_archive(server: LiveServer, archive: Path, name: str, **headers: str) -> httpx.Response:
    with open(archive, "rb") as fh:
        return post(server, {"name": name}, {"file": (archive.name, fh)}, headers)


def post_spin(server: LiveServer, folder: Path, name: str) -> httpx.Response:
    path = write_source(folder, "infinite_loop")
    with open(path, "rb") as fh:
        return post(server, {"name": name, "entrypoint": "Spin", "example_inputs": X8},
                    {"source": (path.name, fh)}, ASYNC)


def follow(server: LiveServer, op_id: str, timeout_s: float = 300) -> tuple[dict, list[str]]:
    """Long-poll an operation to its end; returns the last record and the stages seen running."""
    seen, revision, deadline = [], -1, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.get(f"{server.url}/operations/{op_id}", params={"after": revision, "wait_s": 5},
                      headers=server.auth, timeout=30)
        assert r.status_code == 200, r.text
        record = r.json()
        revision = record["revision"]
        if record["state"] != "running":
            return record, seen
        if not seen or seen[-1] != record["stage"]:
            seen.append(record["stage"])
    raise AssertionError("the operation did not finish")


def test_async_archive_upload_shows_its_stages_and_ends_with_the_201_body(server, archive):
    start = time.monotonic()
    r = post_archive(server, archive, "async-clf", Prefer="respond-async")
    answered_s = time.monotonic() - start
    assert r.status_code == 202, r.text
    assert r.headers["preference-applied"] == "respond-async"
    op = r.json()
    assert r.headers["location"] == f"/operations/{op['id']}"
    assert op["state"] == "running" and op["model"] == "async-clf"
    record, _ = follow(server, op["id"])
    assert record["state"] == "succeeded", record
    assert record["result"]["name"] == "async-clf" and record["result"]["version"] == 1
    names = [s["name"] for s in record["stages"]]
    assert names[0] == "receiving" and names[-1] == "serving"
    assert {"screening", "trial load", "loading", "checking", "committing"} <= set(names)
    assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in record["stages"])
    r = httpx.post(f"{server.url}/models/async-clf/predict", json={"inputs": [[0.1] * 320]}, timeout=30)
    assert r.status_code == 200
    listed = httpx.get(f"{server.url}/operations", headers=server.auth, timeout=10).json()
    assert op["id"] in [o["id"] for o in listed["operations"]]
    print(f"202 after {answered_s:.3f} s; stages: "
          + ", ".join(f"{s['name']} {s['seconds']:.3f}s" for s in record["stages"]))


def test_spinning_source_ends_as_an_operation_error_naming_the_limit(server, tmp_path):
    start = time.monotonic()
    r = post_spin(server, tmp_path, "spin-async")
    assert r.status_code == 202, r.text
    assert time.monotonic() - start < 30  # the 202 does not wait for the compile
    record, seen = follow(server, r.json()["id"])
    assert "compiling" in seen
    assert record["state"] == "failed"
    error = record["error"]
    assert error["status"] == 422 and error["code"] in {"compile_cpu_limit", "compile_timeout"}
    assert "raise SCRIPTSERVE_COMPILE_" in error["message"]
    assert httpx.get(f"{server.url}/models/spin-async", timeout=10).status_code == 404


def tasks_of(server: LiveServer) -> list[int]:
    assert server.proc is not None
    return task_children(server.proc.pid)


def test_cancel_mid_compile_kills_the_process_and_stores_nothing(server, tmp_path):
    r = post_spin(server, tmp_path, "spin-cancel")
    op_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while not tasks_of(server):  # the compile process is running
        assert time.monotonic() < deadline, "no compile process started"
        time.sleep(0.05)
    r = httpx.delete(f"{server.url}/operations/{op_id}", headers=server.auth, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled"
    assert "nothing was stored" in r.json()["error"]["message"]
    deadline = time.monotonic() + 10
    while tasks_of(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tasks_of(server) == []
    assert httpx.get(f"{server.url}/models/spin-cancel", timeout=10).status_code == 404
    assert not (server.store / "spin-cancel").exists()
    assert list((server.store / ".staging").iterdir()) == []
    again = httpx.delete(f"{server.url}/operations/{op_id}", headers=server.auth, timeout=10)
    assert again.status_code == 409 and "already finished: cancelled" in again.text


def test_operation_errors_are_clear(server, archive, tmp_path):
    # a bad form is refused at once, without an operation
    r = post_archive(server, archive, "bad name", Prefer="respond-async")
    assert r.status_code == 400 and "invalid model name" in r.text
    # a bad archive is a failed operation whose error is the synchronous one
    junk = tmp_path / "junk.torchscript"
    junk.write_bytes(b"not a zip" * 100)
    r = post_archive(server, junk, "junk", Prefer="respond-async")
    assert r.status_code == 202
    record, _ = follow(server, r.json()["id"])
    assert record["state"] == "failed" and record["error"]["status"] == 400
    assert "TorchScript archive" in record["error"]["message"]
    for path in ("/operations/" + "0" * 32, "/operations/nope"):
        r = httpx.get(server.url + path, headers=server.auth, timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert httpx.get(server.url + "/operations", timeout=10).status_code == 401
    r = httpx.get(f"{server.url}/operations/{'0' * 32}", params={"wait_s": 99}, headers=server.auth)
    assert r.status_code == 422
    # without the header the upload is synchronous, as before
    assert post_archive(server, archive, "sync-clf").status_code == 201


def test_records_outlive_a_restart(server, archive):
    r = post_archive(server, archive, "kept", Prefer="respond-async")
    record, _ = follow(server, r.json()["id"])
    assert record["state"] == "succeeded"
    server.restart()
    again = httpx.get(f"{server.url}/operations/{record['id']}", headers=server.auth, timeout=10)
    assert again.status_code == 200 and again.json()["result"] == record["result"]
