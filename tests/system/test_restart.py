"""A real server process: models and versions survive restarts and a hard kill."""

from __future__ import annotations

import signal

import httpx
import pytest
import torch

pytestmark = pytest.mark.slow


def predict(server, name, inputs, version=None):
    path = f"/models/{name}/predict" if version is None else \
        f"/models/{name}/versions/{version}/predict"
    return httpx.post(server.url + path, json={"inputs": inputs}, timeout=30)


def test_restart_keeps_every_model_and_version(live_server, archives):
    assert live_server.upload("clf", archives["classifier"]).status_code == 201
    assert live_server.upload("clf", archives["input_confirm"]).status_code == 201
    assert live_server.upload("multi", archives["add_scaled"]).status_code == 201
    x = torch.randn(2, 320)
    before = predict(live_server, "clf", x.tolist(), version=1).json()["outputs"]
    live_server.restart()
    listed = httpx.get(live_server.url + "/models").json()["models"]
    assert {m["name"]: m["versions"] for m in listed} == {"clf": [1, 2], "multi": [1]}
    assert predict(live_server, "clf", x.tolist(), version=1).json()["outputs"] == before
    expected = torch.jit.load(str(archives["classifier"]))(x)
    assert torch.allclose(torch.tensor(before), expected, atol=1e-6)
    assert predict(live_server, "clf", [[-1.0, 1.0, -3.0]]).json()["outputs"] == [[1, -1, 3]]
    assert predict(live_server, "multi", [[[1.0]], [[2.0]]]).json()["outputs"] == [[3.0]]


def test_kill_9_loses_nothing_committed(live_server, archives):
    assert live_server.upload("clf", archives["classifier"]).status_code == 201
    live_server.kill()
    staging = live_server.store / ".staging" / "deadbeef"
    staging.mkdir(parents=True)
    (staging / "upload-file").write_bytes(b"half an upload")
    live_server.start()
    assert not staging.exists()
    assert httpx.get(live_server.url + "/models/clf").status_code == 200
    assert predict(live_server, "clf", [[0.0] * 320]).status_code == 200


def test_sigterm_exits_cleanly(live_server, archives):
    assert live_server.upload("clf", archives["classifier"]).status_code == 201
    log = live_server.log_path
    # uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean exit too
    assert live_server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log.read_text()
