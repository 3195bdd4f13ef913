"""Upload, list, describe, download and delete models through the API."""

from __future__ import annotations

import io
import os
import zipfile

import torch

from tests.support.api import AUTH, upload


def test_upload_returns_201_with_signature(client, archives):
    r = upload(client, "clf", archives["classifier"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "clf" and body["version"] == 1 and body["device"] == "cpu"
    assert body["signature"]["inputs"] == [{"name": "x", "type": "Tensor", "optional": False}]


def test_versions_increment_and_default_is_highest(client, archives):
    assert upload(client, "m", archives["classifier"]).json()["version"] == 1
    assert upload(client, "m", archives["classifier"]).json()["version"] == 2
    assert upload(client, "m", archives["classifier"], version=7).json()["version"] == 7
    info = client.get("/models/m").json()
    assert info["default_version"] == 7
    assert [v["version"] for v in info["versions"]] == [1, 2, 7]
    listed = client.get("/models").json()["models"]
    assert listed[0]["name"] == "m" and listed[0]["versions"] == [1, 2, 7]


def test_existing_version_is_409_and_keeps_the_old_one(client, archives):
    upload(client, "m", archives["classifier"], version=3)
    r = upload(client, "m", archives["tuple_out"], version=3)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    assert client.get("/models/m").json()["versions"][0]["signature"]["returns"] == "Tensor"


def test_describe_reports_sizes_and_time(client, archives):
    upload(client, "m", archives["classifier"])
    v = client.get("/models/m").json()["versions"][0]
    assert v["archive_bytes"] == os.path.getsize(archives["classifier"])
    assert v["parameter_bytes"] == (320 * 160 + 160 + 160 * 2 + 2) * 4
    assert v["created_at"].startswith("20")
    assert len(v["sha256"]) == 64


def test_bad_names_are_400(client, archives):
    for bad in ["", "-lead", "a/b", "..", "x" * 65, "sp ace", "ü"]:
        r = upload(client, bad, archives["classifier"])
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["code"] == "bad_request"


def test_not_an_archive_is_400_saying_what_was_expected(client, tmp_path):
    junk = tmp_path / "junk.torchscript"
    junk.write_bytes(os.urandom(4096))
    r = upload(client, "junk", junk)
    assert r.status_code == 400
    assert "TorchScript archive" in r.json()["error"]["message"]
    assert client.get("/models").json()["models"] == []


def test_state_dict_checkpoint_is_400(client, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    r = upload(client, "w", path)
    assert r.status_code == 400
    assert "torch.save() checkpoint" in r.json()["error"]["message"]


def test_truncated_archive_is_rejected_and_nothing_is_stored(client, archives, tmp_path, settings):
    data = archives["classifier"].read_bytes()
    cut = tmp_path / "cut.torchscript"
    cut.write_bytes(data[: len(data) // 2])
    r = upload(client, "cut", cut)
    assert r.status_code == 400
    assert not (settings.model_store / "cut").exists()
    assert list((settings.model_store / ".staging").iterdir()) == []


def test_zip_that_torch_cannot_load_is_rejected(client, tmp_path):
    path = tmp_path / "fake.torchscript"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("m/data.pkl", b"not a pickle")
        zf.writestr("m/constants.pkl", b"")
        zf.writestr("m/code/__torch__.py", b"")
    r = upload(client, "fake", path)
    assert r.status_code in (400, 422)
    assert r.json()["error"]["code"] in ("invalid_archive", "model_load_failed")
    assert "/tmp" not in r.text


def test_missing_file_and_name_are_400(client, archives):
    r = client.post("/models", data={"name": "x"}, files={"other": ("a", b"x")}, headers=AUTH)
    assert r.status_code == 400
    r = client.post("/models", data={"name": "x"}, headers=AUTH)
    assert r.status_code in (400, 415)
    with open(archives["classifier"], "rb") as fh:
        r = client.post("/models", files={"file": ("a", fh)}, headers=AUTH)
    assert r.status_code == 400 and "'name'" in r.json()["error"]["message"]


def test_bad_form_values_are_400(client, archives):
    for field, value in [("version", "abc"), ("version", "0"), ("max_batch_size", "0"),
                         ("batching", "maybe"), ("device", "tpu"), ("nonsense", "1")]:
        r = upload(client, "m", archives["classifier"], **{field: value})
        assert r.status_code == 400, (field, value, r.text)


def test_json_body_to_upload_is_415(client):
    r = client.post("/models", json={"name": "x"}, headers=AUTH)
    assert r.status_code == 415


def test_upload_over_the_limit_is_413(tmp_path, archives):
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app
    from tests.support.api import TOKEN, wait_ready

    s = Settings(model_store=tmp_path / "s", admin_token=TOKEN, max_upload_bytes=2048,
                 install_example=False, gc_freeze=False)
    with TestClient(create_app(s)) as c:
        wait_ready(c)
        r = upload(c, "big", archives["classifier"])
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"
        assert c.get("/models").json()["models"] == []


def test_download_returns_the_stored_archive(client, archives):
    upload(client, "m", archives["classifier"])
    r = client.get("/models/m/archive")
    assert r.status_code == 200
    assert r.content == archives["classifier"].read_bytes()
    loaded = torch.jit.load(io.BytesIO(r.content))
    x = torch.rand(2, 320)
    assert torch.equal(loaded(x), torch.jit.load(str(archives["classifier"]))(x))
    assert client.get("/models/m/archive?version=9").status_code == 404


def test_delete_version_and_model(client, archives):
    upload(client, "m", archives["classifier"])
    upload(client, "m", archives["classifier"])
    r = client.delete("/models/m/versions/2", headers=AUTH)
    assert r.status_code == 200 and r.json()["deleted_versions"] == [2]
    assert client.get("/models/m").json()["default_version"] == 1
    assert client.delete("/models/m/versions/2", headers=AUTH).status_code == 404
    assert client.delete("/models/m", headers=AUTH).json()["deleted_versions"] == [1]
    assert client.get("/models/m").status_code == 404
    assert client.delete("/models/m", headers=AUTH).status_code == 404


def test_unknown_model_is_404_with_error_shape(client):
    r = client.get("/models/nope")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": "no model named 'nope'"}}
    assert client.get("/no/such/route").json()["error"]["code"] == "not_found"


def test_health_ready_and_offline_docs(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["ready"] is True
    page = client.get("/docs").text
    assert "/docs-static/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/redoc").status_code == 200
    assert "/models/{name}/predict" in client.get("/openapi.json").json()["paths"]
