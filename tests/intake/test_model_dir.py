"""A read-only model directory (KServe's /mnt/models): its layouts, screening, and refusals."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.intake.model_dir import find_versions
from app.main import create_app
from tests.support import fakes, hostile
from tests.support.api import AUTH, TOKEN

X = [[0.25] * 320]


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its size, mode and mtime (ns): what a write would change."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.stat()
        out[str(path.relative_to(root))] = (st.st_size, st.st_mode, st.st_mtime_ns)
    return out


@contextmanager
def serving(settings: Settings, model_dir: Path, name: str = "clf") -> Iterator[TestClient]:
    """An in-process server on ``model_dir``; waits until it has decided (ready or failed)."""
    app = create_app(settings.model_copy(update={"model_dir": model_dir, "model_name": name}))
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = client.get("/ready").json()
            if body["ready"] or body["failed"]:
                break
            time.sleep(0.02)
        yield client


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "mnt-models"
    path.mkdir()
    return path


def test_a_single_archive_file_serves_as_version_1(settings, folder):
    archive = fakes.save("classifier", folder)
    before = snapshot(folder)
    with serving(settings, archive) as client:
        assert client.get("/v2/health/ready").json() == {"ready": True}
        meta = client.get("/v2/models/clf").json()
        assert meta["name"] == "clf" and meta["versions"] == ["1"]
        r = client.post("/v2/models/clf/infer", json={"inputs": [
            {"name": meta["inputs"][0]["name"], "shape": [1, 320], "datatype": "FP32", "data": X[0]}]})
        assert r.status_code == 200, r.text
        expected = torch.jit.load(str(archive))(torch.tensor(X))
        assert torch.allclose(torch.tensor(r.json()["outputs"][0]["data"]), expected.flatten(), atol=1e-6)
        scratch = client.app.state.settings.model_store  # type: ignore[attr-defined]
        assert scratch.is_dir() and folder not in scratch.parents
    assert not scratch.exists()  # the private store goes at shutdown
    assert snapshot(folder) == before


def test_a_folder_with_one_archive_and_other_files(settings, folder):
    fakes.save("classifier", folder)
    (folder / "README.md").write_text("the classifier\n")
    (folder / ".hidden").write_text("skipped\n")
    with serving(settings, folder) as client:
        assert client.get("/ready").json()["ready"] is True
        assert client.get("/models/clf").json()["default_version"] == 1


def test_numeric_subfolders_are_the_versions(settings, folder):
    for version, seed in ((1, 0), (3, 1)):
        (folder / str(version)).mkdir()
        fakes.save("classifier", folder / str(version), seed)
    (folder / "lost+found").mkdir()
    before = snapshot(folder)
    with serving(settings, folder) as client:
        assert client.get("/ready").json()["ready"] is True
        detail = client.get("/models/clf").json()
        assert [v["version"] for v in detail["versions"]] == [1, 3] and detail["default_version"] == 3
        one = client.post("/models/clf/versions/1/predict", json={"inputs": X}).json()["outputs"]
        three = client.post("/models/clf/predict", json={"inputs": X}).json()["outputs"]
        assert one != three
    assert snapshot(folder) == before


def test_writes_are_refused_with_405_and_say_why(settings, folder, archives):
    fakes.save("classifier", folder)
    with serving(settings, folder) as client:
        with open(archives["classifier"], "rb") as fh:
            r = client.post("/models", data={"name": "other"}, files={"file": ("m.pt", fh)}, headers=AUTH)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        error = r.json()["error"]
        assert error["code"] == "read_only"
        assert error["message"].startswith("Upload refused: this server serves the read-only model directory")
        assert "storageUri" in error["message"] and "--model-dir" in error["message"]
        calls = [("DELETE", "/models/clf"), ("DELETE", "/models/clf/versions/1"),
                 ("PUT", "/models/clf/default"), ("DELETE", "/models/clf/default"),
                 ("POST", "/models/clf/rollback")]
        for method, path in calls:
            r = client.request(method, path, headers=AUTH, json={"version": 1})
            assert r.status_code == 405 and r.json()["error"]["code"] == "read_only", (method, path)
        r = client.post("/v2/repository/models/clf/unload", headers=AUTH)
        assert r.status_code == 405 and "read-only model directory" in r.json()["error"]  # the /v2 shape
        # nothing changed; reads still answer
        assert client.post("/models/clf/predict", json={"inputs": X}).status_code == 200
        assert client.post("/v2/repository/index", json={}).status_code == 200


def test_a_hostile_archive_is_screened_and_keeps_the_server_not_ready(settings, folder):
    torch.jit.script(hostile.ReadsFile()).save(str(folder / "model.pt"))
    with serving(settings, folder) as client:
        body = client.get("/ready").json()
        assert body["ready"] is False and client.get("/v2/health/ready").status_code == 503
        assert "aten::from_file" in body["failed"]["clf/1"]
        assert client.get("/v2/health/live").status_code == 200
        assert client.post("/models/clf/predict", json={"inputs": [[1.0]]}).status_code == 404


def test_an_eager_checkpoint_is_not_compiled_and_is_named(settings, folder):
    torch.save(fakes.build("classifier").state_dict(), folder / "weights.pt")
    with serving(settings, folder) as client:
        failed = client.get("/ready").json()["failed"]["clf/1"]
        assert "weights.pt (an eager checkpoint (torch.save): not compiled at start" in failed


def test_layouts_that_name_no_single_archive(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_versions(empty)[0].problem == (
        "no TorchScript or .pt2 archive in the model directory (it is empty)")
    assert find_versions(tmp_path / "absent")[0].problem == "the model directory does not exist"
    two = tmp_path / "two"
    two.mkdir()
    fakes.save("classifier", two, 0)
    fakes.save("classifier", two, 1)
    assert "holds 2 archives" in find_versions(two)[0].problem
    versions = tmp_path / "versions"
    (versions / "2").mkdir(parents=True)
    shutil.copy(fakes.save("classifier", tmp_path), versions / "2" / "model.pt")
    (versions / "5").mkdir()
    found = find_versions(versions)
    assert [(v.version, v.kind, v.problem) for v in found] == [
        (2, "torchscript", ""), (5, "", "no TorchScript or .pt2 archive in 5/ (it is empty)")]


def test_a_bad_model_name_is_refused_by_the_settings():
    with pytest.raises(ValueError, match="model_name"):
        Settings(model_name="../etc", admin_token=TOKEN)


def test_port_comes_from_dollar_port_unless_scriptserve_port_is_set(monkeypatch):
    monkeypatch.delenv("SCRIPTSERVE_PORT", raising=False)
    monkeypatch.setenv("PORT", "8080")
    assert Settings().port == 8080
    monkeypatch.setenv("SCRIPTSERVE_PORT", "9000")
    assert Settings().port == 9000
    assert Settings(port=9100).port == 9100
