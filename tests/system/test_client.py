"""The Python client (sync and async) against a real server process."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest
import torch

from app.client import ApiError, AsyncClient, Client, ConnectionFailedError
from tests.support.api import TOKEN
from tests.support.server import LiveServer, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("client-live") / "store", token=TOKEN) as live:
        yield live


@pytest.fixture
def client(server):
    with Client(server.url, token=TOKEN) as c:
        yield c
        for m in c.models():
            c.delete(m["name"])


def test_upload_reports_progress_and_returns_the_version(client, archives):
    seen: list[tuple[int, int]] = []
    info = client.upload(archives["classifier"], "clf", progress=lambda d, t: seen.append((d, t)))
    assert info["name"] == "clf" and info["version"] == 1
    size = archives["classifier"].stat().st_size
    assert seen[-1] == (size, size)
    assert all(t == size for _, t in seen)
    assert client.upload(archives["classifier"], "clf", version=5, batching="off")["version"] == 5
    listed = client.models()
    assert listed[0]["name"] == "clf" and listed[0]["versions"] == [1, 5]
    versions = client.info("clf")["versions"]
    assert versions[1]["batching"]["mode"] == "off"


def test_predict_returns_arrays_shaped_like_the_model_output(client, archives):
    for name in ("classifier", "tuple_out", "dict_out", "add_scaled"):
        client.upload(archives[name], name)
    module = torch.jit.load(str(archives["classifier"]))
    x = torch.randn(3, 320)
    y = client.predict("classifier", x)
    assert isinstance(y, np.ndarray) and y.shape == (3, 2) and y.dtype == np.float32
    assert np.allclose(y, module(x).detach().numpy(), atol=1e-6)
    doubled, sums = client.predict("tuple_out", np.arange(6.0).reshape(2, 3))
    assert doubled.tolist() == [[0, 2, 4], [6, 8, 10]] and sums.tolist() == [3, 12]
    assert doubled.dtype == np.float64  # float64 in, float64 out: dtypes as the model made them
    halves = client.predict("classifier", x.half().float(), output="torch")
    assert halves.dtype == torch.float32
    out = client.predict("dict_out", torch.tensor([[1.0, -2.0]]), output="torch")
    assert set(out) == {"double", "neg"} and torch.equal(out["neg"], torch.tensor([[-1.0, 2.0]]))
    assert client.predict("add_scaled", {"x": torch.ones(1, 2), "y": torch.ones(1, 2)}).tolist() \
        == [[2.0, 2.0]]
    assert client.predict("add_scaled", [[[1.0]], [[2.0]]], output="json") == [[3.0]]
    assert client.predict("tuple_out", torch.ones(1, 3, dtype=torch.bfloat16), version=1)[1] \
        .tolist() == [3.0]


def test_infer_keeps_dtypes_and_names(client, archives):
    client.upload(archives["tuple_out"], "t")
    x = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    for binary in (True, False):
        out = client.infer("t", {"x": x}, binary=binary, output="torch")
        assert out["output__0"].dtype == torch.int32 and torch.equal(out["output__0"], x * 2)
        assert out["output__1"].dtype == torch.int64
    half = client.infer("t", torch.ones(1, 3, dtype=torch.bfloat16), output="torch")
    assert half["output__0"].dtype == torch.bfloat16
    only = client.infer("t", x, outputs=["output__1"])
    assert list(only) == ["output__1"] and only["output__1"].tolist() == [3, 12]
    meta = client.metadata("t")
    assert meta["inputs"][0]["datatype"] == "INT32"  # the latest request's


def test_code_download_and_delete(client, archives, tmp_path):
    version = client.upload(archives["tuple_out"], "t")["version"]  # numbers are never reused
    assert "def forward" in client.code("t")
    assert "graph(" in client.code("t", view="graph")
    path = client.download("t", tmp_path)
    assert path.name == f"t-v{version}.torchscript"
    sha = client.info("t")["versions"][0]["sha256"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    seen = []
    explicit = client.download("t", tmp_path / "copy.pt", version=version,
                               progress=lambda d, t: seen.append((d, t)))
    assert explicit.read_bytes() == path.read_bytes() and seen[-1][0] == seen[-1][1]
    assert torch.jit.load(str(explicit))(torch.ones(1, 2))[1].tolist() == [2.0]
    assert client.delete("t", version) == {"name": "t", "deleted_versions": [version]}
    with pytest.raises(ApiError) as err:
        client.info("t")
    assert err.value.status_code == 404 and err.value.code == "not_found"


def test_errors_carry_the_server_code_and_message(client, server, archives, tmp_path):
    client.upload(archives["classifier"], "clf")
    with pytest.raises(ApiError) as err:
        client.predict("clf", torch.ones(1, 3))
    assert err.value.status_code == 422 and err.value.code == "model_error"
    assert "1x3" in err.value.message
    with pytest.raises(ApiError) as err:
        client.infer("clf", {"z": torch.ones(1, 320)})
    assert err.value.status_code == 422 and "unknown inputs" in err.value.message
    with pytest.raises(ApiError) as err:
        client.upload(archives["classifier"], "clf", version=1)
    assert err.value.code == "conflict"
    with pytest.raises(ApiError) as err:
        client.download("nope", tmp_path)
    assert err.value.status_code == 404 and not list(tmp_path.iterdir())
    with Client(server.url, token="wrong") as intruder, pytest.raises(ApiError) as err:
        intruder.delete("clf")
    assert err.value.status_code == 401 and err.value.code == "unauthorized"
    with Client(f"http://127.0.0.1:{free_port()}") as nowhere, \
            pytest.raises(ConnectionFailedError):
        nowhere.health()


def test_async_client_runs_concurrent_calls(server, archives, tmp_path):
    async def scenario() -> None:
        async with AsyncClient(server.url, token=TOKEN) as c:
            assert await c.health() and (await c.ready())["ready"]
            await c.upload(archives["classifier"], "aclf")
            xs = [torch.randn(1, 320) for _ in range(6)]
            ys = await asyncio.gather(*(c.predict("aclf", x) for x in xs))
            module = torch.jit.load(str(archives["classifier"]))
            for x, y in zip(xs, ys):
                assert np.allclose(y, module(x).detach().numpy(), atol=1e-6)
            out = await c.infer("aclf", xs[0])
            assert np.allclose(out["output__0"], ys[0], atol=1e-6)
            assert (await c.metadata("aclf"))["inputs"][0]["shape"][1:] == [320]
            assert "def forward" in await c.code("aclf")
            path = await c.download("aclf", tmp_path)
            assert path.stat().st_size == archives["classifier"].stat().st_size
            assert (await c.models())[0]["name"] == "aclf"
            assert (await c.info("aclf"))["default_version"] == 1
            with pytest.raises(ApiError):
                await c.predict("nope", [1.0])
            assert (await c.delete("aclf"))["deleted_versions"] == [1]

    asyncio.run(scenario())
