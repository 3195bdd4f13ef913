"""Choosing the default version: pin, unpin, rollback; kept in the store across restarts."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.api import AUTH, upload, wait_ready

X = {"inputs": [[0.5] * 320]}


def three_versions(client, archives) -> None:
    for _ in range(3):
        assert upload(client, "m", archives["classifier"]).status_code == 201


def predicted_version(client) -> int:
    r = client.post("/models/m/predict", json=X)
    assert r.status_code == 200, r.text
    return r.json()["version"]


def test_pin_unpin_and_rollback_change_what_serves(client, archives):
    three_versions(client, archives)
    assert predicted_version(client) == 3

    r = client.put("/models/m/default", json={"version": 1}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "m", "default_version": 1, "pinned_version": 1, "previous_default": 3}
    assert predicted_version(client) == 1
    info = client.get("/models/m").json()
    assert (info["default_version"], info["pinned_version"]) == (1, 1)
    assert client.get("/models").json()["models"][0]["pinned_version"] == 1
    # a newer upload does not move a pinned default
    assert upload(client, "m", archives["classifier"]).json()["version"] == 4
    assert predicted_version(client) == 1

    r = client.delete("/models/m/default", headers=AUTH)
    assert r.json() == {"name": "m", "default_version": 4, "pinned_version": None, "previous_default": 1}
    assert predicted_version(client) == 4

    r = client.post("/models/m/rollback", headers=AUTH)
    assert r.json() == {"name": "m", "default_version": 3, "pinned_version": 3, "previous_default": 4}
    r = client.post("/models/m/rollback", headers=AUTH)
    assert r.json()["default_version"] == 2
    assert predicted_version(client) == 2
    # an explicit version still reaches any version
    r = client.post("/models/m/versions/4/predict", json=X)
    assert r.status_code == 200 and r.json()["version"] == 4


def test_the_pin_survives_a_restart(settings, archives):
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        three_versions(c, archives)
        assert c.put("/models/m/default", json={"version": 2}, headers=AUTH).status_code == 200
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        assert c.get("/models/m").json()["pinned_version"] == 2
        assert predicted_version(c) == 2


def test_bad_pins_are_clear_4xx_and_change_nothing(client, archives):
    three_versions(client, archives)
    cases = [
        (client.put("/models/m/default", json={"version": 9}, headers=AUTH), 404, "no version 9"),
        (client.put("/models/nope/default", json={"version": 1}, headers=AUTH), 404, "nope"),
        (client.put("/models/m/default", json={"version": "two"}, headers=AUTH), 422, "version"),
        (client.put("/models/m/default", json={}, headers=AUTH), 422, "version"),
        (client.put("/models/m/default", json={"version": 0}, headers=AUTH), 422, "version"),
        (client.put("/models/m/default", json={"version": 1}), 401, "token"),
        (client.post("/models/m/rollback"), 401, "token"),
        (client.delete("/models/m/default"), 401, "token"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, (r.status_code, r.text)
        assert words in r.text
    assert client.get("/models/m").json()["pinned_version"] is None
    assert predicted_version(client) == 3


def test_rollback_from_the_oldest_version_is_409(client, archives):
    three_versions(client, archives)
    assert client.put("/models/m/default", json={"version": 1}, headers=AUTH).status_code == 200
    r = client.post("/models/m/rollback", headers=AUTH)
    assert r.status_code == 409
    assert "no version older than its default 1" in r.json()["error"]["message"]


def test_the_pinned_version_cannot_be_deleted_alone_but_the_model_can(client, archives, settings):
    three_versions(client, archives)
    client.put("/models/m/default", json={"version": 2}, headers=AUTH)
    r = client.delete("/models/m/versions/2", headers=AUTH)
    assert r.status_code == 409
    assert "unpin it first (scriptserve unpin m)" in r.json()["error"]["message"]
    assert predicted_version(client) == 2
    assert client.delete("/models/m/versions/3", headers=AUTH).status_code == 200
    assert client.delete("/models/m", headers=AUTH).json()["deleted_versions"] == [1, 2]
    assert not (settings.model_store / "m").exists()
    # a new model of that name starts unpinned
    assert upload(client, "m", archives["classifier"]).status_code == 201
    assert client.get("/models/m").json()["pinned_version"] is None
