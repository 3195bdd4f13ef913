"""Web-friendly answers: CORS for configured origins, HEAD on health and readiness."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.api import AUTH, upload, wait_ready

ALLOWED = "https://app.example.com"


@pytest.fixture
def cors_client(settings):
    settings = settings.model_copy(update={"cors_origins": [ALLOWED], "inference_token": "reader"})
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def _preflight(client: TestClient, origin: str, path: str = "/models/m/predict"):
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})


def test_preflight_from_an_allowed_origin_is_answered_without_a_token(cors_client):
    r = _preflight(cors_client, ALLOWED)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()


def test_preflight_from_another_origin_is_refused(cors_client):
    r = _preflight(cors_client, "https://evil.example.net")
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers


def test_cross_origin_answers_carry_cors_headers_on_every_path(cors_client, archives):
    assert upload(cors_client, "clf", archives["classifier"]).status_code == 201
    headers = {"Origin": ALLOWED, "Authorization": "Bearer reader"}
    predicted = cors_client.post("/models/clf/predict", json={"inputs": [[0.0] * 320]}, headers=headers)
    refused = cors_client.post("/models/clf/predict", json={"inputs": [[0.0] * 320]},
                               headers={"Origin": ALLOWED})  # no token: 401, still readable
    listed = cors_client.get("/models", headers={**headers})
    assert [predicted.status_code, refused.status_code, listed.status_code] == [200, 401, 200]
    for r in (predicted, refused, listed):
        assert r.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()


def test_cors_is_off_by_default(client):
    r = _preflight(client, ALLOWED)
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": ALLOWED}).headers


def test_head_on_health_and_readiness(client):
    for path in ("/health", "/ready", "/v2/health/live", "/v2/health/ready"):
        r = client.head(path)
        assert r.status_code == 200, path
        assert r.content == b""


def test_one_version_is_described_by_its_own_url(client, archives):
    upload(client, "m", archives["classifier"])
    upload(client, "m", archives["tuple_out"])
    first = client.get("/models/m/versions/1")
    assert first.status_code == 200
    assert first.json()["version"] == 1 and first.json()["signature"]["returns"] == "Tensor"
    assert client.get("/models/m/versions/2").json()["signature"]["returns"].startswith("Tuple")
    assert client.get("/models/m/versions/3").status_code == 404
    assert client.get("/models/m/versions/x").status_code == 422
    assert client.delete("/models/m/versions/1", headers=AUTH).status_code == 200
    assert client.get("/models/m/versions/1").status_code == 404
