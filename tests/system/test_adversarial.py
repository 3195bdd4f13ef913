"""Hostile uploads against a real server on 127.0.0.1: each refused, the server healthy after.

One server serves the whole module (starting one costs seconds); after every refusal the
module checks that it is alive, ready, still serving the good model with the same output,
and that nothing was stored and no error body leaks internals.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from tests.support import hostile
from tests.support.api import TOKEN
from tests.support.hostile import Entry, raw_zip, torchscript_entries
from tests.support.leaks import assert_no_leak
from tests.support.server import LiveServer

pytestmark = pytest.mark.slow
X = [[0.5] * 320]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def server(folder: Path, archives) -> Iterator[LiveServer]:
    with LiveServer(folder / "store", token=TOKEN, SCRIPTSERVE_TRIAL_TIMEOUT_S="20") as live:
        r = live.upload("good", archives["classifier"])
        assert r.status_code == 201, r.text
        live.expected = predict(live)  # type: ignore[attr-defined]
        yield live


def predict(server: LiveServer) -> list:
    r = httpx.post(f"{server.url}/models/good/predict", json={"inputs": X}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["outputs"]


def refused(server: LiveServer, path: Path, status: int, code: str, *named: str) -> str:
    r = server.upload("evil", path)
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code, body
    for text in named:
        assert text in body["message"], body
    assert_no_leak(r.text, server.store)
    assert_healthy(server)
    return body["message"]


def assert_healthy(server: LiveServer, idle: bool = True) -> None:
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 200
    assert predict(server) == server.expected  # type: ignore[attr-defined]
    names = [m["name"] for m in httpx.get(f"{server.url}/models", timeout=10).json()["models"]]
    assert names == ["good"]
    if idle:  # no upload in progress: nothing may be left half-written
        assert list((server.store / ".staging").iterdir()) == []


@pytest.fixture(scope="module")
def base(folder: Path) -> Path:
    return hostile.base_archive(folder)


@pytest.mark.parametrize(("statement", "named"), [
    ('    torch.save(x, "/tmp/scriptserve-pwned")\n', "aten::save"),
    ('    _0 = torch.from_file("/etc/passwd", None, 4)\n', "aten::from_file"),
    ('    _0 = getattr(torch, "save")\n', "indirect reference"),
    ("    _0 = ops.prim.rpc_async()\n", "prim::rpc_async"),
    ("    _0 = ops.prim.PythonOp()\n", "prim::PythonOp"),
    ("    _0 = ops.c10d.barrier(x)\n", "c10d::barrier"),
    ("    _0 = ops._c10d_functional.all_reduce(x, \"sum\", \"0\")\n", "distributed"),
    ("    _0 = ops.my_extension.run(x)\n", "my_extension::run"),
    ('    _0 = __torch__.torch.classes.dist_c10d.FileStore("/tmp/f", 1)\n', "custom class"),
])
def test_each_refused_op_is_422_naming_op_file_and_line(server, base, folder, statement, named):
    path = hostile.edit(base, folder / "op.pt", hostile.in_forward(statement))
    refused(server, path, 422, "unsafe_archive", named, "code/__torch__/tests/support/hostile.py line 8")


def test_scripted_from_file_module_is_refused(server, folder):
    path = folder / "reads.pt"
    torch.jit.script(hostile.ReadsFile()).save(str(path))
    refused(server, path, 422, "unsafe_archive", "aten::from_file")


def test_save_at_load_time_is_refused_and_never_runs(server, base, folder):
    marker = folder / "written-at-load"
    path = hostile.edit(base, folder / "setstate.pt", hostile.with_setstate(
        f'    torch.save(torch.ones([1]), "{marker}")\n'), data_pkl=hostile.SETSTATE_PKL)
    refused(server, path, 422, "unsafe_archive", "aten::save")
    assert not marker.exists()


def test_pickle_naming_a_python_callable_is_refused(server, base, folder):
    path = hostile.edit(base, folder / "pkl.pt", data_pkl=b"\x80\x02cos\nsystem\n)\x81.")
    refused(server, path, 422, "unsafe_archive", "os.system")


def test_zip_bomb_declaring_50_gb_is_413(server, folder):
    path = hostile.zip_bomb(folder / "bomb.pt")
    assert os.path.getsize(path) < 10_000
    refused(server, path, 413, "payload_too_large", "declares 5000000")


def test_compression_ratio_bomb_is_422(server, folder):
    refused(server, hostile.ratio_bomb(folder / "ratio.pt"), 422, "unsafe_archive", "zip bomb")


@pytest.mark.parametrize(("entry", "named"), [
    (Entry("m/../../../../etc/scriptserve-evil", b"x"), "'..'"),
    (Entry("/etc/cron.d/evil", b"x"), "absolute path"),
    (Entry("m/extra/link", b"/etc/passwd", mode=hostile.SYMLINK), "symbolic link"),
    (Entry("m/data/0", b"x", flags=1), "encrypted"),
    (Entry("m/data.pkl", b"\x80\x02."), "more than once"),
    (Entry("m/extra/inner.zip", b"PK\x03\x04"), "nested archive"),
])
def test_hostile_zip_structure_is_422(server, folder, entry, named):
    path = raw_zip(folder / "structure.pt", torchscript_entries() + [entry])
    refused(server, path, 422, "unsafe_archive", named)
    assert not Path("/etc/scriptserve-evil").exists()


def test_truncated_random_and_empty_uploads_are_400(server, folder, archives):
    data = archives["classifier"].read_bytes()
    (folder / "cut.pt").write_bytes(data[: len(data) * 2 // 3])
    refused(server, folder / "cut.pt", 400, "invalid_archive", "damaged")
    (folder / "random.pt").write_bytes(os.urandom(64 * 1024))
    refused(server, folder / "random.pt", 400, "invalid_archive", "not a zip")
    (folder / "empty.pt").write_bytes(b"")
    refused(server, folder / "empty.pt", 400, "bad_request", "no archive")


def test_traversal_in_model_name_and_filename_is_harmless(server, archives):
    r = server.upload("../../etc", archives["classifier"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = server.upload("evil", archives["classifier"], filename="../../../tmp/scriptserve-x")
    assert r.status_code == 201
    assert not Path("/tmp/scriptserve-x").exists()
    assert httpx.delete(f"{server.url}/models/evil", headers=server.auth).status_code == 200
    r = httpx.get(f"{server.url}/models/..%2F..%2Fetc%2Fpasswd/archive")
    assert r.status_code == 404
    assert_healthy(server)


def test_load_that_spins_is_killed_in_its_trial_process(server, base, folder):
    path = hostile.edit(base, folder / "spin.pt", hostile.with_setstate(
        "    i = 0\n    while torch.lt(i, 1000000000000):\n      i = torch.add(i, 1)\n"),
        data_pkl=hostile.SETSTATE_PKL)
    result: dict = {}
    upload = threading.Thread(target=lambda: result.update(r=server.upload("evil", path)))
    upload.start()
    assert_healthy(server, idle=False)  # the server answers while the trial process spins
    upload.join(120)
    r = result["r"]
    assert r.status_code == 422 and r.json()["error"]["code"] == "model_load_failed", r.text
    assert "within 20 s" in r.json()["error"]["message"]
    assert_healthy(server)


def test_load_that_allocates_without_bound_fails_in_its_trial_process(server, base, folder):
    path = hostile.edit(base, folder / "alloc.pt", hostile.with_setstate(
        "    _0 = torch.ones([68719476736])\n    state = bool(torch.gt(torch.sum(_0), 0.))\n"),
        data_pkl=hostile.SETSTATE_PKL)
    r = server.upload("evil", path)
    assert r.status_code == 422 and r.json()["error"]["code"] == "model_load_failed", r.text
    assert "memory limit" in r.json()["error"]["message"]
    assert_no_leak(r.text, server.store)
    assert_healthy(server)
