"""Request IDs, access and error logs (text and JSON), and promtool on a live server's /metrics."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.telemetry.logs import JsonFormatter, RequestIdFilter, TextFormatter, request_id_var
from tests.support.api import TOKEN, upload, wait_ready
from tests.support.server import LiveServer

ROW = [0.5] * 320


def is_generated(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


@pytest.mark.parametrize("sent", ["abc-123", "trace:span/42", "A" * 128, "0f" * 16])
def test_a_sane_request_id_is_echoed(client, sent):
    assert client.get("/health", headers={"X-Request-ID": sent}).headers["x-request-id"] == sent


@pytest.mark.parametrize("sent", ["", "has space", "A" * 129, "quote\"d", "-leading-dash", "é"])
def test_an_insane_request_id_is_replaced(client, sent):
    got = client.get("/health", headers={"X-Request-ID": sent.encode("utf-8")}).headers
    assert got["x-request-id"] != sent and is_generated(got["x-request-id"])


def test_every_response_carries_a_fresh_id(settings, archives):
    settings.max_body_bytes = 4096
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert upload(client, "classifier", archives["classifier"]).status_code == 201
        responses = [
            client.get("/health"),
            client.get("/models/nope"),  # 404
            client.post("/models/classifier/predict", json={"inputs": [[1.0]]}),  # 422
            client.post("/models/classifier/predict", content=b"x" * 5000),  # 413
            client.post("/models/classifier/predict", json={"inputs": [ROW]}),  # 200
            client.get("/metrics"),
        ]
    assert [r.status_code for r in responses] == [200, 404, 422, 413, 200, 200]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(is_generated(i) for i in ids) and len(set(ids)) == len(ids)


def test_an_unhandled_error_is_answered_and_logged_with_the_request_id(settings, caplog):
    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)  # a route with a bug, to reach the last-resort handler
    caplog.handler.addFilter(RequestIdFilter())  # as configure() does for the real handler
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        caplog.set_level(logging.INFO)
        response = client.get("/boom", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "bug-1"
    assert response.json()["error"]["code"] == "internal_error"
    access = [r for r in caplog.records if r.name == "app.access"]
    assert access[-1].request_id == "bug-1" and access[-1].fields["status"] == 500
    error = [r for r in caplog.records if r.levelno >= logging.ERROR][-1]
    assert error.request_id == "bug-1"
    doc = json.loads(JsonFormatter().format(error))
    assert doc["request_id"] == "bug-1" and "a bug" in doc["exc"]


def test_formatters_write_the_request_id_and_access_fields():
    record = logging.LogRecord("app.access", logging.INFO, __file__, 1, "GET / %d", (200,), None)
    token = request_id_var.set("rid-7")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    record.fields = {"status": 200, "duration_ms": 1.5}
    doc = json.loads(JsonFormatter().format(record))
    assert doc["request_id"] == "rid-7" and doc["status"] == 200 and doc["message"] == "GET / 200"
    assert TextFormatter().format(record).endswith("GET / 200 [request_id=rid-7]")
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "no request", (), None)
    RequestIdFilter().filter(plain)
    assert "request_id" not in json.loads(JsonFormatter().format(plain))
    assert TextFormatter().format(plain).endswith("no request")


def install_classifier(server: LiveServer, archive: Path) -> None:
    with open(archive, "rb") as fh:
        r = httpx.post(server.url + "/models", data={"name": "classifier"},
                       files={"file": ("c.torchscript", fh)}, headers=server.auth, timeout=60)
    assert r.status_code == 201


@pytest.mark.slow
def test_json_logs_are_one_object_per_line_with_request_ids(tmp_path, archives):
    server = LiveServer(tmp_path / "store", token=TOKEN, SCRIPTSERVE_LOG_FORMAT="json")
    server.start()
    try:
        install_classifier(server, archives["classifier"])
        url = server.url + "/models/classifier/predict"
        ok = httpx.post(url, json={"inputs": [ROW]}, headers={"X-Request-ID": "req-ok-1"})
        late = httpx.post(url + "?timeout_s=0.000000001", json={"inputs": [ROW]},
                          headers={"X-Request-ID": "req-late-1"})
    finally:
        server.stop()
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "req-ok-1"
    assert late.status_code == 504 and late.headers["x-request-id"] == "req-late-1"
    lines = [ln for ln in server.log_path.read_text().splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]  # every line is one JSON object
    access = {d["request_id"]: d for d in docs if d["logger"] == "app.access"}
    assert access["req-ok-1"]["status"] == 200 and access["req-ok-1"]["duration_ms"] > 0
    assert access["req-late-1"]["status"] == 504
    warned = [d for d in docs if d["level"] == "warning" and d.get("request_id") == "req-late-1"]
    assert warned and "504" in warned[0]["message"]
    assert not [d for d in docs if d["logger"] == "uvicorn.access"]  # one access line, ours


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian: apt-get install prometheus)")
def test_promtool_accepts_the_live_exposition(tmp_path, archives):
    server = LiveServer(tmp_path / "store", token=TOKEN)
    server.start()
    try:
        install_classifier(server, archives["classifier"])
        url = server.url + "/models/classifier/predict"
        for _ in range(5):
            assert httpx.post(url, json={"inputs": [ROW, ROW]}).status_code == 200
        assert httpx.post(url, json={"inputs": [[1.0]]}).status_code == 422
        httpx.post(server.url + "/models", headers=server.auth, data={"name": "x"},
                   files={"file": ("x.bin", b"junk")})
        body = httpx.get(server.url + "/metrics").content
    finally:
        server.stop()
    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                            timeout=60)
    problems = (result.stdout + result.stderr).decode()
    assert result.returncode == 0 and not problems.strip(), problems
    text = body.decode()
    assert 'scriptserve_request_duration_seconds_count{model="classifier",status="ok",' \
           'version="1"} 5.0' in text
    assert 'scriptserve_batch_size_sum{model="classifier",version="1"} 10.0' in text
    assert 'scriptserve_upload_failures_total{reason="invalid_archive"} 1.0' in text
