"""Open Inference Protocol (KServe v2): health, metadata, JSON and binary infer, errors."""

from __future__ import annotations

import gzip

import httpx
import numpy as np
import orjson
import pytest
import torch

from tests.support.api import upload

DATATYPES = {
    "BOOL": torch.bool, "UINT8": torch.uint8, "INT8": torch.int8, "INT16": torch.int16,
    "INT32": torch.int32, "INT64": torch.int64, "FP16": torch.float16, "FP32": torch.float32,
    "FP64": torch.float64, "BF16": torch.bfloat16,
}

NAMES = {v: k for k, v in DATATYPES.items()}


@pytest.fixture
def served(client, archives):
    for name in ("classifier", "add_scaled", "tuple_out", "dict_out", "fails_on_negative"):
        assert upload(client, name, archives[name]).status_code == 201
    return client


def infer(client, name, inputs, path=None, **extra):
    body = {"inputs": inputs, **extra}
    return client.post(path or f"/v2/models/{name}/infer", json=body)


def tensor(name, t: torch.Tensor, datatype: str | None = None):
    data = t.float() if t.dtype == torch.bfloat16 else t
    return {"name": name, "shape": list(t.shape), "datatype": datatype or "FP32",
            "data": data.reshape(-1).tolist()}


def binary_body(inputs: dict[str, tuple[str, np.ndarray]], **extra) -> tuple[bytes, int]:
    specs, raw = [], []
    for name, (datatype, array) in inputs.items():
        chunk = np.ascontiguousarray(array).tobytes()
        specs.append({"name": name, "shape": list(array.shape), "datatype": datatype,
                      "parameters": {"binary_data_size": len(chunk)}})
        raw.append(chunk)
    head = orjson.dumps({"inputs": specs, **extra})
    return head + b"".join(raw), len(head)


def split_binary(r) -> tuple[dict, bytes]:
    n = int(r.headers["inference-header-content-length"])
    return orjson.loads(r.content[:n]), r.content[n:]


def test_server_metadata_and_health(client):
    meta = client.get("/v2").json()
    assert meta["name"] == "scriptserve" and "binary_tensor_data" in meta["extensions"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_learns_from_the_first_request(served):
    meta = served.get("/v2/models/classifier").json()
    assert meta["name"] == "classifier" and meta["versions"] == ["1"]
    assert meta["platform"] == "pytorch_libtorch"
    assert meta["inputs"] == [{"name": "x", "datatype": "UNKNOWN", "shape": []}]
    assert meta["outputs"] == [{"name": "output__0", "datatype": "UNKNOWN", "shape": []}]
    x = torch.randn(3, 320)
    assert infer(served, "classifier", [tensor("x", x)]).status_code == 200
    meta = served.get("/v2/models/classifier").json()
    # the batch-safety probe passed, so the batch dimension is variable
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 320]}]
    assert meta["outputs"] == [{"name": "output__0", "datatype": "FP32", "shape": [-1, 2]}]


def test_metadata_names_optional_inputs_and_tuple_outputs(served):
    meta = served.get("/v2/models/add_scaled/versions/1").json()
    assert [i["name"] for i in meta["inputs"]] == ["x", "y", "alpha"]
    assert meta["inputs"][2]["parameters"] == {"optional": True}
    outputs = served.get("/v2/models/tuple_out").json()["outputs"]
    assert [o["name"] for o in outputs] == ["output__0", "output__1"]


def test_native_predictions_also_teach_metadata(served):
    served.post("/models/dict_out/predict", json={"inputs": [[1.0, 2.0, 3.0]]})
    outputs = served.get("/v2/models/dict_out").json()["outputs"]
    assert [(o["name"], o["datatype"]) for o in outputs] == [("double", "FP32"), ("neg", "FP32")]
    assert all(o["shape"][1:] == [3] for o in outputs)


def test_model_readiness(served):
    assert served.get("/v2/models/classifier/ready").json()["ready"] is True
    assert served.get("/v2/models/classifier/versions/1/ready").status_code == 200
    r = served.get("/v2/models/classifier/versions/9/ready")
    assert r.status_code == 404 and "no version 9" in r.json()["error"]
    assert served.get("/v2/models/nope/ready").status_code == 404


def test_json_infer_equals_native_predict(served):
    x = torch.randn(4, 320)
    r = infer(served, "classifier", [tensor("x", x)], id="req-1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "classifier" and body["model_version"] == "1"
    assert body["id"] == "req-1"
    (out,) = body["outputs"]
    assert out["name"] == "output__0" and out["datatype"] == "FP32" and out["shape"] == [4, 2]
    native = served.post("/models/classifier/predict", json={"inputs": x.tolist()}).json()
    assert np.array_equal(np.asarray(out["data"], np.float32).reshape(4, 2),
                          np.asarray(native["outputs"], np.float32))


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_in_json_and_binary(served, datatype):
    dtype = DATATYPES[datatype]
    x = torch.tensor([[1, 0, 3], [2, 5, 0]]).to(dtype)
    expected = [x * 2, x.sum(dim=1)]
    r = infer(served, "tuple_out", [tensor("x", x, datatype)])
    assert r.status_code == 200, r.text
    for out, want in zip(r.json()["outputs"], expected):
        assert out["datatype"] == NAMES[want.dtype]
        got = torch.tensor(out["data"]).reshape(out["shape"])
        assert torch.equal(got.to(want.dtype), want)
    raw = x.view(torch.int16).numpy() if dtype == torch.bfloat16 else x.numpy()
    body, n = binary_body({"x": (datatype, raw)}, parameters={"binary_data_output": True})
    r = served.post("/v2/models/tuple_out/infer", content=body,
                    headers={"Inference-Header-Content-Length": str(n)})
    assert r.status_code == 200, r.text
    header, data = split_binary(r)
    offset = 0
    for out, want in zip(header["outputs"], expected):
        size = out["parameters"]["binary_data_size"]
        chunk = bytearray(data[offset:offset + size])
        offset += size
        got = torch.frombuffer(chunk, dtype=want.dtype).reshape(out["shape"])
        assert torch.equal(got, want), (datatype, out)
    assert offset == len(data)


def test_requested_outputs_mix_json_and_binary(served):
    x = torch.arange(6.0).reshape(2, 3)
    outputs = [{"name": "output__1", "parameters": {"binary_data": True}},
               {"name": "output__0"}]
    r = infer(served, "tuple_out", [tensor("x", x)], outputs=outputs)
    header, data = split_binary(r)
    assert [o["name"] for o in header["outputs"]] == ["output__0", "output__1"]
    assert header["outputs"][0]["data"] == (x * 2).reshape(-1).tolist()
    assert np.frombuffer(data, np.float32).tolist() == [3.0, 12.0]
    r = infer(served, "tuple_out", [tensor("x", x)], outputs=[{"name": "output__0"}])
    assert [o["name"] for o in r.json()["outputs"]] == ["output__0"]
    r = infer(served, "tuple_out", [tensor("x", x)], outputs=[{"name": "logits"}])
    assert r.status_code == 422 and "output__0" in r.json()["error"]


def test_named_inputs_optional_and_dict_outputs(served):
    x, y = torch.ones(1, 2), torch.full((1, 2), 3.0)
    r = infer(served, "add_scaled", [tensor("y", y), tensor("x", x)])
    assert r.json()["outputs"][0]["data"] == [4.0, 4.0]
    r = infer(served, "add_scaled", [tensor("x", x), tensor("y", y), tensor("alpha", y)])
    assert r.json()["outputs"][0]["data"] == [10.0, 10.0]
    r = infer(served, "dict_out", [tensor("x", x)])
    assert [o["name"] for o in r.json()["outputs"]] == ["double", "neg"]


def test_an_empty_batch_is_answered(served):
    empty = {"name": "x", "shape": [0, 3], "datatype": "FP32", "data": []}
    r = infer(served, "tuple_out", [empty])
    assert r.status_code == 200, r.text
    assert [o["shape"] for o in r.json()["outputs"]] == [[0, 3], [0]]
    # and the batch-safety probe still runs on the first real input
    assert infer(served, "tuple_out", [tensor("x", torch.ones(1, 3))]).status_code == 200
    assert served.get("/models/tuple_out").json()["versions"][0]["batching"]["enabled"] is True


def test_gzip_request_body(served):
    body = orjson.dumps({"inputs": [tensor("x", torch.ones(1, 3))]})
    r = served.post("/v2/models/tuple_out/infer", content=gzip.compress(body),
                    headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][1]["data"] == [3.0]


def error(r) -> tuple[int, str]:
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return r.status_code, body["error"]


def test_bad_requests_are_400_with_a_v2_error(served):
    x = tensor("x", torch.ones(1, 3))
    cases = [
        (b"{nope", {}, "not valid JSON"),
        (orjson.dumps({"inputs": []}), {}, "non-empty"),
        (orjson.dumps({"inputs": [{**x, "datatype": "BYTES"}]}), {}, "not supported"),
        (orjson.dumps({"inputs": [{**x, "shape": [2, 3]}]}), {}, "do not fit shape"),
        (orjson.dumps({"inputs": [{**x, "shape": [-1, 3]}]}), {}, "integers from 0"),
        (orjson.dumps({"inputs": [{**x, "shape": [2**62, 4], "data": []}]}), {}, "integers from 0"),
        (orjson.dumps({"inputs": [{**x, "shape": [2**30, 2**30], "data": []}]}), {}, "do not fit"),
        (orjson.dumps({"inputs": [{**x, "data": ["a", "b", "c"]}]}), {}, "rectangular"),
        (orjson.dumps({"inputs": [x, x]}), {}, "twice"),
        (orjson.dumps({"inputs": [x]}) + b"junk", {"Inference-Header-Content-Length": "-"},
         "must be an integer"),
        (orjson.dumps({"inputs": [x]}), {"Inference-Header-Content-Length": "9999"}, "body has"),
        (orjson.dumps({"inputs": [x], "outputs": [{"name": "output__0",
                                                   "parameters": {"classification": 2}}]}),
         {}, "classification"),
    ]
    for body, headers, expected in cases:
        r = served.post("/v2/models/tuple_out/infer", content=body, headers=headers)
        status, message = error(r)
        assert status == 400 and expected in message, (body[:80], status, message)


def test_binary_sizes_must_add_up(served):
    raw = np.ones((1, 3), np.float32)
    body, n = binary_body({"x": ("FP32", raw)})
    r = served.post("/v2/models/tuple_out/infer", content=body + b"\0",
                    headers={"Inference-Header-Content-Length": str(n)})
    assert error(r) == (400, "1 bytes of binary data are not claimed by any input's binary_data_size")
    r = served.post("/v2/models/tuple_out/infer", content=body[:-4],
                    headers={"Inference-Header-Content-Length": str(n)})
    assert error(r)[0] == 400
    head = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}]})
    r = served.post("/v2/models/tuple_out/infer", content=head + bytes(8),
                    headers={"Inference-Header-Content-Length": str(len(head))})
    status, message = error(r)
    assert status == 400 and "needs 12" in message


def test_inputs_that_do_not_fit_the_model_are_422(served):
    status, message = error(infer(served, "add_scaled", [tensor("x", torch.ones(1, 2))]))
    assert status == 422 and "missing inputs ['y']" in message
    status, message = error(infer(served, "classifier", [tensor("z", torch.ones(1, 320))]))
    assert status == 422 and "unknown inputs ['z']" in message
    status, message = error(infer(served, "classifier", [tensor("x", torch.ones(1, 3))]))
    assert status == 422 and "1x3" in message
    status, message = error(infer(served, "fails_on_negative", [tensor("x", -torch.ones(1, 1))]))
    assert status == 422 and "negative values are not allowed" in message


def test_unknown_models_versions_and_paths_are_404(served):
    assert error(served.get("/v2/models/nope"))[0] == 404
    assert error(served.get("/v2/models/classifier/versions/x"))[0] == 404
    assert error(infer(served, "nope", [tensor("x", torch.ones(1))]))[0] == 404
    assert error(served.get("/v2/not/a/path"))[0] == 404
    # the native API keeps its own error shape
    assert served.get("/models/nope").json()["error"]["code"] == "not_found"


def test_v2_and_native_requests_go_through_the_same_batcher(client, archives):
    r = upload(client, "m", archives["tuple_out"], batching="on")
    assert r.status_code == 201
    batcher = client.app.state.registry.get("m").batcher
    v2 = infer(client, "m", [tensor("x", torch.ones(1, 3))])
    assert v2.json()["outputs"][1]["data"] == [3.0]
    assert batcher.executions == 1
    native = client.post("/models/m/predict", json={"inputs": [[2.0, 2.0, 2.0]]})
    assert native.json()["outputs"] == [[[4.0, 4.0, 4.0]], [6.0]]
    assert batcher.executions == 2  # how queued requests combine: tests/serving/test_batching.py


def test_inference_token_guards_v2_models_but_not_health(tmp_path, archives):
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app
    from tests.support.api import AUTH, TOKEN, wait_ready

    s = Settings(model_store=tmp_path / "s", admin_token=TOKEN, inference_token="reader",
                 install_example=False, gc_freeze=False)
    with TestClient(create_app(s)) as c:
        wait_ready(c)
        upload(c, "m", archives["tuple_out"])
        assert c.get("/v2/health/ready").status_code == 200
        assert error(c.get("/v2/models/m"))[0] == 401
        r = c.post("/v2/models/m/infer", json={"inputs": [tensor("x", torch.ones(1, 3))]},
                   headers={"Authorization": "Bearer reader"})
        assert r.status_code == 200
        assert c.get("/v2/models/m", headers=AUTH).status_code == 200


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory, archives):
    from tests.support.api import TOKEN
    from tests.support.server import LiveServer

    with LiveServer(tmp_path_factory.mktemp("v2-live") / "store", token=TOKEN) as server:
        for name in ("classifier", "tuple_out", "add_scaled", "dict_out"):
            with open(archives[name], "rb") as fh:
                r = httpx.post(f"{server.url}/models", headers=server.auth, timeout=60,
                               data={"name": name}, files={"file": (fh.name, fh)})
            assert r.status_code == 201, r.text
        yield server


def native(server, name, x: torch.Tensor) -> list[np.ndarray]:
    """The native endpoint's outputs for ``x``, as arrays (a tuple output gives several)."""
    data = x.float() if x.dtype == torch.bfloat16 else x
    body = {"inputs": {"data": data.reshape(-1).tolist(), "shape": list(x.shape),
                       "dtype": str(x.dtype).removeprefix("torch.")}}
    r = httpx.post(f"{server.url}/models/{name}/predict", json=body, timeout=30)
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    if isinstance(outputs, dict):
        return [np.asarray(v) for v in outputs.values()]
    return [np.asarray(o) for o in outputs] if name == "tuple_out" else [np.asarray(outputs)]


@pytest.mark.slow
def test_tritonclient_drives_the_server(triton_server):
    """NVIDIA's own HTTP client: metadata, JSON and binary infer, datatypes, a batch."""
    th = pytest.importorskip("tritonclient.http")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from tritonclient.utils import InferenceServerException

    c = th.InferenceServerClient(triton_server.url.removeprefix("http://"))
    try:
        assert c.is_server_live() and c.is_server_ready()
        assert c.get_server_metadata()["name"] == "scriptserve"
        assert c.is_model_ready("classifier") and c.is_model_ready("classifier", "1")
        assert not c.is_model_ready("nope")

        # a batch of 8 rows, as JSON and as binary; equal to the native endpoint's answer
        x = torch.randn(8, 320)
        want = native(triton_server, "classifier", x)[0].astype(np.float32)
        for binary in (False, True):
            inp = th.InferInput("x", [8, 320], "FP32").set_data_from_numpy(
                x.numpy(), binary_data=binary)
            out = th.InferRequestedOutput("output__0", binary_data=binary)
            result = c.infer("classifier", [inp], outputs=[out])
            assert np.array_equal(result.as_numpy("output__0"), want)
        meta = c.get_model_metadata("classifier")
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 320]}]
        assert meta["outputs"] == [{"name": "output__0", "datatype": "FP32", "shape": [-1, 2]}]

        # several datatypes through a two-output model; default: every output in binary
        cases = {"FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
                 "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_, "BF16": ml_dtypes.bfloat16}
        for datatype, np_dtype in cases.items():
            array = (np.arange(12).reshape(4, 3) % 3).astype(np_dtype)
            inp = th.InferInput("x", [4, 3], datatype).set_data_from_numpy(array)
            result = c.infer("tuple_out", [inp])
            as_torch = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16) \
                if datatype == "BF16" else torch.from_numpy(array)
            for name, expected in zip(("output__0", "output__1"), native(triton_server, "tuple_out",
                                                                       as_torch)):
                got = result.as_numpy(name)
                assert got.shape == expected.shape, (datatype, name)
                assert np.array_equal(got.astype(np.float64), expected.astype(np.float64)), datatype

        # named inputs in any order, dict outputs by key, JSON outputs on request
        a = th.InferInput("y", [1, 2], "FP32").set_data_from_numpy(np.ones((1, 2), np.float32))
        b = th.InferInput("x", [1, 2], "FP32").set_data_from_numpy(np.full((1, 2), 2, np.float32))
        result = c.infer("add_scaled", [a, b])
        assert result.as_numpy("output__0").tolist() == [[3.0, 3.0]]
        result = c.infer("dict_out", [b], outputs=[th.InferRequestedOutput("neg", binary_data=False)])
        assert result.as_numpy("neg").tolist() == [[-2.0, -2.0]] and result.as_numpy("double") is None

        with pytest.raises(InferenceServerException, match="unknown inputs"):
            c.infer("classifier", [th.InferInput("z", [1, 2], "FP32").set_data_from_numpy(
                np.ones((1, 2), np.float32))])
        with pytest.raises(InferenceServerException, match="no model named"):
            c.get_model_metadata("nope")
    finally:
        c.close()
