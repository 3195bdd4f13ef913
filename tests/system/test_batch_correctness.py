"""Under concurrent load, every answer equals the per-sample eager answer."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch

from app.examples import InputConfirm

pytestmark = pytest.mark.slow


async def hammer(url: str, rows: list[list[float]], clients: int, rounds: int) -> list:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        async def one_client(c: int) -> list:
            answers = []
            for r in range(rounds):
                row = rows[(c * rounds + r) % len(rows)]
                resp = await http.post(url, json={"inputs": [row]})
                answers.append((row, resp.status_code, resp.json()))
            return answers

        results = await asyncio.gather(*(one_client(c) for c in range(clients)))
    return [a for client in results for a in client]


def test_input_confirm_under_32_clients_matches_eager(live_server, archives):
    with open(archives["input_confirm"], "rb") as fh:
        r = httpx.post(f"{live_server.url}/models", headers=live_server.auth,
                       data={"name": "ic"}, files={"file": fh}, timeout=60)
    assert r.status_code == 201
    gen = torch.Generator().manual_seed(1)
    rows = []
    for i in range(64):
        sign = 1.0 if i % 2 == 0 else -1.0
        rows.append((torch.rand(8, generator=gen) * sign * (1 + i)).tolist())
    answers = asyncio.run(hammer(f"{live_server.url}/models/ic/predict", rows, 32, 8))
    eager = InputConfirm()
    assert len(answers) == 256
    for row, status, body in answers:
        assert status == 200, body
        expected = eager(torch.tensor([row])).tolist()
        assert torch.allclose(torch.tensor(body["outputs"]), torch.tensor(expected)), row
    info = httpx.get(f"{live_server.url}/models/ic").json()["versions"][0]["batching"]
    assert info["enabled"] is False and "depend on other samples" in info["reason"]


def test_classifier_under_32_clients_is_batched_and_correct(live_server, archives):
    with open(archives["classifier"], "rb") as fh:
        r = httpx.post(f"{live_server.url}/models", headers=live_server.auth,
                       data={"name": "clf"}, files={"file": fh}, timeout=60)
    assert r.status_code == 201
    gen = torch.Generator().manual_seed(2)
    rows = [(torch.randn(320, generator=gen) * (1 + i % 5)).tolist() for i in range(64)]
    answers = asyncio.run(hammer(f"{live_server.url}/models/clf/predict", rows, 32, 8))
    module = torch.jit.load(str(archives["classifier"]))
    for row, status, body in answers:
        assert status == 200, body
        expected = module(torch.tensor([row]))
        assert torch.allclose(torch.tensor(body["outputs"]), expected, atol=1e-5)
    info = httpx.get(f"{live_server.url}/models/clf").json()["versions"][0]["batching"]
    assert info["enabled"] is True


def test_example_inputs_probe_at_load_and_survive_restart(live_server, archives):
    import json

    for name, path in (("ic", archives["input_confirm"]), ("clf", archives["classifier"])):
        shape = [1, 8] if name == "ic" else [1, 320]
        with open(path, "rb") as fh:
            r = httpx.post(f"{live_server.url}/models", headers=live_server.auth, timeout=60,
                           data={"name": name, "example_inputs": json.dumps([{"shape": shape}])},
                           files={"file": fh})
        assert r.status_code == 201, r.text
    def batching(name):
        return httpx.get(f"{live_server.url}/models/{name}").json()["versions"][0]["batching"]

    assert batching("ic")["enabled"] is False and batching("clf")["enabled"] is True
    live_server.restart()
    assert batching("ic")["enabled"] is False and batching("clf")["enabled"] is True


def test_example_inputs_that_fail_reject_the_upload(live_server, archives):
    with open(archives["classifier"], "rb") as fh:
        r = httpx.post(f"{live_server.url}/models", headers=live_server.auth, timeout=60,
                       data={"name": "clf", "example_inputs": '[{"shape": [1, 3]}]'},
                       files={"file": fh})
    assert r.status_code == 422 and "example_inputs" in r.json()["error"]["message"]
    with open(archives["classifier"], "rb") as fh:
        r = httpx.post(f"{live_server.url}/models", headers=live_server.auth, timeout=60,
                       data={"name": "clf", "example_inputs": "not json"}, files={"file": fh})
    assert r.status_code == 400
    assert httpx.get(f"{live_server.url}/models/clf").status_code == 404
