"""Predictions: input forms, dtypes, output structures and every input error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.api import upload


@pytest.fixture
def served(client, archives):
    for name in ("classifier", "add_scaled", "tuple_out", "dict_out", "fails_on_negative",
                 "embed", "input_confirm"):
        assert upload(client, name, archives[name]).status_code == 201
    return client


def predict(client, name, inputs, **kw):
    return client.post(f"/models/{name}/predict", json={"inputs": inputs}, **kw)


def test_outputs_equal_in_process_forward(served, archives):
    module = torch.jit.load(str(archives["classifier"]))
    x = torch.randn(3, 320)
    r = predict(served, "classifier", x.tolist())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "classifier" and body["version"] == 1
    got = torch.tensor(body["outputs"])
    assert torch.allclose(got, module(x), atol=1e-6)


def test_explicit_tensor_object_with_shape_and_dtype(served):
    flat = list(range(6))
    r = predict(served, "tuple_out", {"data": flat, "shape": [2, 3], "dtype": "float64"})
    assert r.status_code == 200, r.text
    doubled, sums = r.json()["outputs"]
    assert doubled == [[0, 2, 4], [6, 8, 10]]
    assert sums == [3, 12]


def test_multi_input_positional_and_by_name(served):
    x, y = [[1.0, 2.0]], [[10.0, 20.0]]
    assert predict(served, "add_scaled", [x, y]).json()["outputs"] == [[11.0, 22.0]]
    r = predict(served, "add_scaled", {"y": y, "x": x, "alpha": [[0.5, 0.5]]})
    assert r.json()["outputs"] == [[6.0, 12.0]]


def test_dict_output_mirrors_structure(served):
    r = predict(served, "dict_out", [[1.0, -2.0]])
    assert r.json()["outputs"] == {"double": [[2.0, -4.0]], "neg": [[-1.0, 2.0]]}


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16"])
def test_float_dtypes_come_back_as_float_lists(served, dtype):
    r = predict(served, "dict_out", {"data": [[0.5, 1.5]], "dtype": dtype})
    assert r.status_code == 200
    assert r.json()["outputs"]["double"] == [[1.0, 3.0]]


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "bool"])
def test_integer_and_bool_dtypes(served, dtype):
    r = predict(served, "tuple_out", {"data": [[1, 0, 1]], "dtype": dtype})
    assert r.status_code == 200, r.text
    doubled, _ = r.json()["outputs"]
    expected = torch.tensor([[1, 0, 1]]).to(getattr(torch, dtype)) * 2
    assert doubled == expected.tolist()


def test_integer_ids_for_an_embedding(served, archives):
    module = torch.jit.load(str(archives["embed"]))
    r = predict(served, "embed", [[1, 2, 3]])
    assert np.allclose(r.json()["outputs"], module(torch.tensor([[1, 2, 3]])).detach().numpy())


def error(r):
    return r.status_code, r.json()["error"]["code"], r.json()["error"]["message"]


def test_wrong_arity_names_the_inputs(served):
    status, code, msg = error(predict(served, "add_scaled", [[[1.0]]]))
    assert status == 422 and code == "invalid_input" and "['x', 'y', 'alpha']" in msg
    status, _, msg = error(predict(served, "add_scaled", {"x": [[1.0]]}))
    assert status == 422 and "missing inputs ['y']" in msg
    status, _, msg = error(predict(served, "add_scaled", {"x": [1], "y": [1], "z": [1]}))
    assert status == 422 and "unknown inputs ['z']" in msg


def test_wrong_shape_is_422_with_the_model_message(served):
    status, code, msg = error(predict(served, "classifier", [[1.0, 2.0, 3.0]]))
    assert status == 422 and code == "model_error"
    assert "1x3" in msg and "Traceback" not in msg and "File" not in msg


def test_ragged_and_non_numeric_inputs(served):
    assert error(predict(served, "classifier", [[1.0], [1.0, 2.0]]))[0] == 422
    assert error(predict(served, "classifier", [["a", "b"]]))[0] == 422
    assert error(predict(served, "classifier", "text"))[0] == 422
    status, _, msg = error(predict(served, "classifier", {"data": [1, 2], "dtype": "complex"}))
    assert status == 422 and "unknown dtype" in msg
    status, _, msg = error(predict(served, "classifier", {"data": [1, 2, 3], "shape": [2, 2]}))
    assert status == 422 and "do not fit shape" in msg


def test_model_runtime_error_is_422(served):
    status, code, msg = error(predict(served, "fails_on_negative", [[-1.0]]))
    assert status == 422 and code == "model_error"
    assert "negative values are not allowed" in msg
    assert predict(served, "fails_on_negative", [[1.0]]).json()["outputs"] == [[2.0]]


def test_malformed_bodies_are_400(served):
    r = served.post("/models/classifier/predict", content=b"{nope",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = served.post("/models/classifier/predict", json={"input": [1]})
    assert r.status_code == 400
    r = served.post("/models/classifier/predict", content=b"\x00\x01",
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 415


def test_body_over_the_limit_is_413(tmp_path, archives):
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app
    from tests.support.api import TOKEN, wait_ready

    s = Settings(model_store=tmp_path / "s", admin_token=TOKEN, max_body_bytes=4096,
                 install_example=False, gc_freeze=False)
    with TestClient(create_app(s)) as c:
        wait_ready(c)
        upload(c, "m", archives["classifier"])
        r = predict(c, "m", [[0.5] * 320] * 10)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        assert predict(c, "m", [[0.5] * 320]).status_code == 200


def test_versioned_predict_and_unknown_version(served, archives):
    upload(served, "classifier", archives["classifier"])
    r = served.post("/models/classifier/versions/1/predict", json={"inputs": [[0.0] * 320]})
    assert r.status_code == 200 and r.json()["version"] == 1
    r = predict(served, "classifier", [[0.0] * 320])
    assert r.json()["version"] == 2
    r = served.post("/models/classifier/versions/5/predict", json={"inputs": [[0.0] * 320]})
    assert r.status_code == 404
    r = served.post("/models/classifier/versions/abc/predict", json={"inputs": [[0.0] * 320]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_input_confirm_answers_both_branches(served):
    assert predict(served, "input_confirm", [[1.0, 2.0]]).json()["outputs"] == [[1.0, 2.0]]
    assert predict(served, "input_confirm", [[-1.0, -2.0]]).json()["outputs"] == [[1.0, 2.0]]


def test_integer_json_for_a_float_model_is_explained_then_learnt(served):
    status, code, msg = error(predict(served, "classifier", [[1] * 320]))
    assert status == 422 and "send 1.0 rather than 1" in msg
    assert predict(served, "classifier", [[0.5] * 320]).status_code == 200
    ok = predict(served, "classifier", [[1] * 320])  # the float input is now known
    assert ok.status_code == 200
    same = predict(served, "classifier", [[1.0] * 320]).json()["outputs"]
    assert ok.json()["outputs"] == same


def test_example_inputs_declare_float_inputs(client, archives):
    r = upload(client, "c", archives["classifier"], example_inputs='[{"shape": [1, 320]}]')
    assert r.status_code == 201, r.text
    assert predict(client, "c", [[1] * 320]).status_code == 200
