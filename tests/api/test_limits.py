"""Limits: deadlines drop requests from the queue, outputs and bodies are bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from app.errors import DeadlineExceededError, OutputTooLargeError
from app.main import create_app
from tests.serving.test_batching import make, run
from tests.support.api import AUTH, upload, wait_ready


def test_expired_request_leaves_the_queue_and_never_runs():
    async def go():
        model, batcher = make(max_queue_size=2)
        first = asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 30))
        await asyncio.to_thread(model.entered.wait, 10)
        doomed = asyncio.ensure_future(batcher.submit([torch.ones(5, 3)], 0.05))
        kept = asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 30))
        with pytest.raises(DeadlineExceededError):
            await doomed
        depth = batcher.queue_depth  # the expired job gave its slot back at once
        again = asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 30))
        await asyncio.sleep(0)
        in_flight = batcher.in_flight
        model.gate.set()
        await asyncio.gather(first, kept, again)
        await batcher.stop()
        return model, depth, in_flight, batcher.in_flight

    model, depth, in_flight, after = run(go())
    assert depth == 1
    assert in_flight == 3 and after == 0
    assert model.batch_sizes == [1, 2]  # the five-row request never reached forward


def test_output_over_the_limit_fails_alone():
    async def go():
        model, batcher = make(max_output_bytes=100)
        first = asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 30))
        await asyncio.to_thread(model.entered.wait, 10)
        later = [torch.ones(1, 3), torch.ones(10, 3), torch.ones(1, 3)]
        rest = [asyncio.ensure_future(batcher.submit([x], 30)) for x in later]
        while batcher.queue_depth < 3:
            await asyncio.sleep(0.001)
        model.gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await batcher.stop()
        return model, results

    model, results = run(go())
    assert model.batch_sizes[1] == 12  # they ran as one batch
    assert isinstance(results[2], OutputTooLargeError) and results[2].status_code == 422
    assert torch.equal(results[1][0], torch.full((1, 3), 2.0))
    assert torch.equal(results[3][0], torch.full((1, 3), 2.0))


@pytest.fixture
def small_client(settings):
    limited = settings.model_copy(update={
        "max_body_bytes": 4096, "max_upload_bytes": 64 * 1024, "max_output_bytes": 1024})
    with TestClient(create_app(limited)) as c:
        wait_ready(c)
        yield c


def test_http_limits(small_client, archives):
    c = small_client
    assert upload(c, "t", archives["tuple_out"]).status_code == 201
    big = {"inputs": [[0.0] * 3] * 400}
    r = c.post("/models/t/predict", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no content-length: the limit holds on the stream too
        yield b'{"inputs": ['
        for _ in range(1000):
            yield b"[0.0, 0.0, 0.0],"
        yield b"[0.0, 0.0, 0.0]]}"

    r = c.post("/models/t/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = c.post("/models/t/predict", json={"inputs": [[1.0] * 3] * 100})  # 1.6 KB of output
    assert r.status_code == 422 and r.json()["error"]["code"] == "output_too_large"
    assert c.post("/models/t/predict", json={"inputs": [[1.0] * 3]}).status_code == 200
    r = c.post("/models", data={"name": "huge"}, headers=AUTH,
               files={"file": ("x.pt", b"\0" * (128 * 1024))})
    assert r.status_code == 413
    assert c.get("/models").json()["models"][0]["name"] == "t"


def test_per_request_deadline_is_504(client, archives):
    r = upload(client, "slow", archives["slow_classifier"], batching="on")  # forwards take seconds
    assert r.status_code == 201
    r = client.post("/models/slow/predict?timeout_s=0.2", json={"inputs": [[0.0] * 320]})
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
    assert client.post("/models/slow/predict?timeout_s=0", json={"inputs": [[0.0]]}).status_code == 422


def test_predictions_over_the_in_flight_limit_get_503_before_the_body_is_read(settings, archives):
    # a generous deadline: on a busy machine the held forward takes many seconds
    limited = settings.model_copy(update={"max_concurrent_predictions": 1,
                                          "request_timeout_s": 600})
    with TestClient(create_app(limited)) as c:
        wait_ready(c)
        r = upload(c, "held", archives["slow_classifier"], batching="on")  # forwards take seconds
        assert r.status_code == 201
        first: list = []
        holder = threading.Thread(target=lambda: first.append(
            c.post("/models/held/predict", json={"inputs": [[0.0] * 320]})))
        holder.start()
        while c.get("/models/held").json()["versions"][0]["in_flight"] < 1:
            time.sleep(0.01)

        def never_sent():  # the server answers without reading this body
            raise AssertionError("the body was read")
            yield b""

        r = c.post("/models/held/predict", content=never_sent(),
                   headers={"content-type": "application/json", "content-length": "10"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
        holder.join(600)
        assert first[0].status_code == 200
        assert c.post("/models/held/predict?timeout_s=0.1",
                      json={"inputs": [[0.0] * 320]}).status_code == 504  # admitted again
