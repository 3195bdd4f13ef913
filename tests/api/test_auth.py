"""Bearer tokens for management (always) and inference (when configured)."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.security import load_or_create_admin_token
from tests.support.api import TOKEN, upload, wait_ready


def test_management_needs_the_admin_token(client, archives):
    with open(archives["classifier"], "rb") as fh:
        r = client.post("/models", data={"name": "m"}, files={"file": fh})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    with open(archives["classifier"], "rb") as fh:
        r = client.post("/models", data={"name": "m"}, files={"file": fh},
                        headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert upload(client, "m", archives["classifier"]).status_code == 201
    assert client.delete("/models/m").status_code == 401
    assert client.delete("/models/m", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/models/m").status_code == 200  # listing stays open


def test_generated_token_is_written_0600(tmp_path):
    s = Settings(model_store=tmp_path / "s", install_example=False, gc_freeze=False)
    with TestClient(create_app(s)) as c:
        wait_ready(c)
        token_file = tmp_path / "s" / ".admin_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        r = c.delete("/models/x", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404  # authorised, then not found
    with TestClient(create_app(s)) as c:  # the same token is reused after a restart
        assert token_file.read_text().strip() == token


def test_servers_starting_together_agree_on_one_generated_token(tmp_path):
    token_file = tmp_path / ".admin_token"
    with ThreadPoolExecutor(8) as pool:
        tokens = set(pool.map(lambda _: load_or_create_admin_token(None, token_file), range(8)))
    assert tokens == {token_file.read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == [".admin_token"]  # no temporary left
    token_file.write_text("")  # an empty file (a crash long ago) is replaced
    assert load_or_create_admin_token(None, token_file) == token_file.read_text().strip() != ""


def test_inference_token_guards_predict_and_listing(tmp_path, archives):
    s = Settings(model_store=tmp_path / "s", admin_token=TOKEN, inference_token="reader",
                 install_example=False, gc_freeze=False)
    with TestClient(create_app(s)) as c:
        wait_ready(c)
        upload(c, "m", archives["classifier"])
        body = {"inputs": [[0.0] * 320]}
        assert c.post("/models/m/predict", json=body).status_code == 401
        assert c.get("/models").status_code == 401
        assert c.get("/models/m/code").status_code == 401
        ok = {"Authorization": "Bearer reader"}
        assert c.post("/models/m/predict", json=body, headers=ok).status_code == 200
        assert c.get("/models", headers=ok).status_code == 200
        assert c.get("/health").status_code == 200
        assert c.delete("/models/m", headers=ok).status_code == 401  # reader is not admin
