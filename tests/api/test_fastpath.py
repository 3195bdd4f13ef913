"""The ASGI fast path answers prediction paths exactly like the documented routes would."""

from __future__ import annotations

from tests.support.api import upload


def test_timeout_query_is_validated(client, archives):
    upload(client, "c", archives["classifier"])
    body = {"inputs": [[0.0] * 320]}
    assert client.post("/models/c/predict?timeout_s=5", json=body).status_code == 200
    for bad in ("0", "-1", "abc", "99999"):
        r = client.post(f"/models/c/predict?timeout_s={bad}", json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", bad


def test_other_methods_and_paths_fall_through(client, archives):
    upload(client, "c", archives["classifier"])
    assert client.get("/models/c/predict").status_code == 405
    assert client.post("/models/c/predict/extra", json={}).status_code == 404
    assert client.post("/models/nope/predict", json={"inputs": [1]}).status_code == 404


def test_openapi_still_documents_predict(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/models/{name}/predict"]
    assert "post" in paths["/models/{name}/versions/{version}/predict"]
