"""The dtype rule (cast or 422 dtype_mismatch) and v2 metadata from the upload, kept across restarts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.wire.casting import cast_input
from tests.support.api import AUTH, upload, wait_ready

EXAMPLE = '[{"shape": [1, 320], "dtype": "float32"}]'


def v2_infer(client, name, datatype, array):
    body = {"inputs": [{"name": "x", "shape": list(array.shape), "datatype": datatype,
                        "data": array.reshape(-1).tolist()}]}
    return client.post(f"/v2/models/{name}/infer", json=body)


def native(client, name, array, dtype):
    body = {"inputs": {"data": array.reshape(-1).tolist(), "shape": list(array.shape), "dtype": dtype}}
    return client.post(f"/models/{name}/predict", json=body)


def test_float64_is_cast_to_a_declared_float32_input_on_native_and_v2(client, archives):
    assert upload(client, "c", archives["classifier"], example_inputs=EXAMPLE).status_code == 201
    x = np.random.default_rng(0).standard_normal((2, 320))
    ref = native(client, "c", x.astype("f4"), "float32").json()["outputs"]
    got = native(client, "c", x, "float64")
    assert got.status_code == 200, got.text
    assert np.allclose(got.json()["outputs"], ref, atol=1e-6)
    r = v2_infer(client, "c", "FP64", x)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["datatype"] == "FP32"
    assert np.allclose(np.reshape(out["data"], out["shape"]), ref, atol=1e-6)


def test_undeclared_float64_is_dtype_mismatch_on_native_and_v2(client, archives):
    """No example inputs: the model's own dtype failure becomes one code, never torch's text."""
    assert upload(client, "c", archives["classifier"]).status_code == 201
    x = np.zeros((1, 320))
    for r in (native(client, "c", x, "float64"), v2_infer(client, "c", "FP64", x)):
        assert r.status_code == 422, r.text
        body = r.json()["error"]
        text = body["message"] if isinstance(body, dict) else body
        if isinstance(body, dict):
            assert body["code"] == "dtype_mismatch"
        assert "'x'" in text and "float64" in text and "float32" in text
        assert "mat1" not in text and "Double" not in text


def test_float_to_a_declared_integer_input_is_refused(client, archives):
    fields = {"inputs": '[{"name": "ids", "datatype": "INT64", "shape": [-1, 3]}]'}
    assert upload(client, "e", archives["embed"], **fields).status_code == 201
    r = client.post("/models/e/predict", json={"inputs": {"data": [1.5, 2, 3], "shape": [1, 3],
                                                          "dtype": "float32"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "dtype_mismatch"
    assert "'ids'" in r.json()["error"]["message"] and "int64" in r.json()["error"]["message"]
    ok = client.post("/models/e/predict", json={"inputs": {"data": [1, 2, 3], "shape": [1, 3],
                                                           "dtype": "int32"}})
    assert ok.status_code == 200, ok.text  # int32 -> int64: every value fits


def test_cast_rule_unit():
    import torch

    assert cast_input("x", torch.ones(2, dtype=torch.float64), torch.float32).dtype == torch.float32
    assert cast_input("x", torch.tensor([3, 4]), torch.int8).dtype == torch.int8
    with pytest.raises(Exception, match="do not fit"):
        cast_input("x", torch.tensor([300]), torch.int8)
    with pytest.raises(Exception, match="overflow"):
        cast_input("x", torch.tensor([1e300], dtype=torch.float64), torch.float32)
    with pytest.raises(Exception, match="only bool"):
        cast_input("x", torch.tensor([1]), torch.bool)


def metadata(client, name):
    r = client.get(f"/v2/models/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def test_metadata_from_example_inputs_before_any_request_and_after_restart(settings, archives):
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert upload(client, "c", archives["classifier"], example_inputs=EXAMPLE).status_code == 201
        meta = metadata(client, "c")
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 320]}]
        assert meta["outputs"] == [{"name": "output__0", "datatype": "FP32", "shape": [-1, 2]}]
    with TestClient(create_app(settings)) as client:  # a restart on the same store
        wait_ready(client)
        assert metadata(client, "c") == meta


def test_metadata_learnt_from_requests_is_kept_across_restarts(settings, archives):
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert upload(client, "t", archives["tuple_out"]).status_code == 201
        assert metadata(client, "t")["inputs"][0]["datatype"] == "UNKNOWN"
        for rows in (1, 3):
            body = {"inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP32",
                                "data": [0.5] * (4 * rows)}]}
            assert client.post("/v2/models/t/infer", json=body).status_code == 200
        learnt = metadata(client, "t")
        assert learnt["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
        assert [o["name"] for o in learnt["outputs"]] == ["output__0", "output__1"]
    # the signature is saved within a second of the change, and surely by shutdown's end
    stored = settings.model_store / "models" / "t" / "learnt" / "1.json"
    for _ in range(100):
        if stored.exists():
            break
        import time
        time.sleep(0.05)
    assert json.loads(stored.read_text())["inputs"][0]["shape"] == [-1, 4]
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        again = metadata(client, "t")
        assert again["inputs"] == learnt["inputs"] and again["outputs"] == learnt["outputs"]


def test_declared_signature_is_metadata_and_validated(client, archives):
    inputs = '[{"name": "x", "dtype": "float32", "shape": [-1, 320]}]'
    outputs = '[{"name": "output__0", "datatype": "FP32", "shape": [-1, 2]}]'
    r = upload(client, "c", archives["classifier"], inputs=inputs, outputs=outputs)
    assert r.status_code == 201, r.text
    meta = metadata(client, "c")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 320]}]
    assert meta["outputs"] == [{"name": "output__0", "datatype": "FP32", "shape": [-1, 2]}]
    bad = [
        ('[{"name": "y", "datatype": "FP32", "shape": [1]}]', "forward does not take"),
        ('[{"name": "x", "datatype": "FP99", "shape": [1]}]', "datatype"),
        ('[{"name": "x", "datatype": "FP32", "shape": "big"}]', "shape"),
        ("not json", "not valid JSON"),
    ]
    for raw, words in bad:
        r = upload(client, "c2", archives["classifier"], inputs=raw)
        assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
    assert client.get("/models/c2", headers=AUTH).status_code == 404
