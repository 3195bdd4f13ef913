"""gRPC (inference.GRPCInferenceService) with NVIDIA's tritonclient.grpc against the app's lifespan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.support.api import AUTH, TOKEN, upload, wait_ready
from tests.support.server import free_port

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

EXAMPLE = '[{"shape": [1, 320], "dtype": "float32"}]'


@pytest.fixture
def grpc_settings(tmp_path: Path) -> Settings:
    return Settings(model_store=tmp_path / "store", admin_token=TOKEN, device="cpu",
                    install_example=False, gc_freeze=False, trial_load=False, grpc_port=free_port())


@pytest.fixture
def served(grpc_settings, archives) -> Iterator[tuple[TestClient, object]]:
    with TestClient(create_app(grpc_settings)) as client:
        wait_ready(client)
        assert client.app.state.grpc_port == grpc_settings.grpc_port
        assert upload(client, "c", archives["classifier"], example_inputs=EXAMPLE).status_code == 201
        assert upload(client, "t", archives["tuple_out"]).status_code == 201
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_settings.grpc_port}")
        yield client, g
        g.close()


def fp32(name, array):
    t = grpcclient.InferInput(name, list(array.shape), "FP32")
    t.set_data_from_numpy(array)
    return t


def test_health_and_metadata_from_the_start(served):
    _, g = served
    assert g.is_server_live() and g.is_server_ready()
    assert g.is_model_ready("c") and g.is_model_ready("c", "1") and not g.is_model_ready("nope")
    meta = g.get_server_metadata(as_json=True)
    assert meta["name"] == "scriptserve" and "model_repository" in meta["extensions"]
    model = g.get_model_metadata("c", as_json=True)
    assert model["platform"] == "pytorch_libtorch"
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "320"]}]
    assert model["outputs"] == [{"name": "output__0", "datatype": "FP32", "shape": ["-1", "2"]}]


def test_infer_raw_contents_equals_native_predict(served):
    client, g = served
    x = np.random.default_rng(1).standard_normal((4, 320)).astype("f4")
    got = g.infer("c", [fp32("x", x)]).as_numpy("output__0")
    native = np.asarray(client.post("/models/c/predict", json={"inputs": x.tolist()}).json()["outputs"])
    assert got.dtype == np.float32 and got.shape == (4, 2)
    assert np.array_equal(got, native.astype("f4"))
    pair = g.infer("t", [fp32("x", x[:, :4].copy())], model_version="1",
                   outputs=[grpcclient.InferRequestedOutput("output__1")])
    assert pair.as_numpy("output__0") is None and pair.as_numpy("output__1").shape == (4,)


def test_async_infer(served):
    _, g = served
    x = np.ones((2, 320), "f4")
    results = []
    g.async_infer("c", [fp32("x", x)], callback=lambda result, error: results.append((result, error)))
    import time
    for _ in range(200):
        if results:
            break
        time.sleep(0.01)
    result, error = results[0]
    assert error is None and result.as_numpy("output__0").shape == (2, 2)


def test_float64_follows_the_dtype_rule_and_errors_map_to_status_codes(served):
    _, g = served
    x = np.zeros((1, 320))
    t = grpcclient.InferInput("x", [1, 320], "FP64")
    t.set_data_from_numpy(x)
    assert g.infer("c", [t]).as_numpy("output__0").dtype == np.float32  # cast, by the rule
    expected = [
        (lambda: g.infer("nope", [fp32("x", x.astype("f4"))]), "StatusCode.NOT_FOUND", "nope"),
        (lambda: g.infer("c", [fp32("y", x.astype("f4"))]), "StatusCode.INVALID_ARGUMENT", "unknown inputs"),
        (lambda: g.infer("c", [fp32("x", x.astype("f4"))], model_version="7"), "StatusCode.NOT_FOUND", "7"),
        (lambda: g.get_model_config("nope"), "StatusCode.NOT_FOUND", "nope"),
        (lambda: g.load_model("c"), "StatusCode.UNAUTHENTICATED", "token"),
    ]
    for call, status, words in expected:
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == status and words in info.value.message()


def test_undeclared_float64_is_dtype_mismatch_over_grpc(served):
    client, g = served
    with open(client.app.state.store.read("c", 1).archive, "rb") as fh:
        r = client.post("/models", data={"name": "plain"}, files={"file": ("m", fh)}, headers=AUTH)
    assert r.status_code == 201
    t = grpcclient.InferInput("x", [1, 320], "FP64")
    t.set_data_from_numpy(np.zeros((1, 320)))
    with pytest.raises(InferenceServerException) as info:
        g.infer("plain", [t])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'x'" in info.value.message() and "float64" in info.value.message()
    assert "mat1" not in info.value.message()


def test_config_repository_and_statistics(served):
    _, g = served
    config = g.get_model_config("c", as_json=True)["config"]
    assert config["max_batch_size"] == 32 and config["input"][0]["dims"] == ["320"]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    g.infer("c", [fp32("x", np.ones((2, 320), "f4"))])
    stats = g.get_inference_statistics("c", as_json=True)["model_stats"][0]
    assert stats["name"] == "c" and int(stats["inference_count"]) >= 2
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    index = g.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["state"]) for m in index} == {("c", "READY"), ("t", "READY")}
    headers = {"authorization": f"Bearer {TOKEN}"}
    g.unload_model("t", headers=headers)
    assert not g.is_model_ready("t")
    states = {m["name"]: m for m in g.get_model_repository_index(as_json=True)["models"]}
    assert states["t"]["state"] == "UNAVAILABLE" and states["t"]["reason"] == "unloaded"
    g.load_model("t", headers=headers)
    assert g.is_model_ready("t")


def test_inference_token_over_grpc(tmp_path, archives):
    settings = Settings(model_store=tmp_path / "s", admin_token=TOKEN, inference_token="reader",
                        device="cpu", gc_freeze=False, trial_load=False, grpc_port=free_port())
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert upload(client, "c", archives["classifier"]).status_code == 201
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{settings.grpc_port}")
        x = fp32("x", np.ones((1, 320), "f4"))
        with pytest.raises(InferenceServerException) as info:
            g.infer("c", [x])
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        out = g.infer("c", [x], headers={"authorization": "Bearer reader"}).as_numpy("output__0")
        assert out.shape == (1, 2)
        assert g.is_server_live()  # health stays open


def test_grpc_off_and_port_taken(tmp_path):
    off = Settings(model_store=tmp_path / "a", admin_token=TOKEN, gc_freeze=False, grpc_port=0)
    with TestClient(create_app(off)) as client:
        wait_ready(client)
        assert client.app.state.grpc_port is None
    port = free_port()
    first = Settings(model_store=tmp_path / "b", admin_token=TOKEN, gc_freeze=False, grpc_port=port)
    second = Settings(model_store=tmp_path / "c", admin_token=TOKEN, gc_freeze=False, grpc_port=port)
    with TestClient(create_app(first)) as a, TestClient(create_app(second)) as b:
        wait_ready(a)
        wait_ready(b)
        assert a.app.state.grpc_port == port and b.app.state.grpc_port is None
        assert b.get("/health").status_code == 200  # HTTP serves on


def test_deadlines_map_to_deadline_exceeded(served):
    _, g = served
    x = fp32("x", np.ones((1, 320), "f4"))
    with pytest.raises(InferenceServerException) as info:
        g.infer("c", [x], timeout=1)  # Triton's server-side timeout parameter: 1 microsecond
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert "deadline" in info.value.message()
