"""Binary bodies: .npy for one input, .npz for several, and binary responses."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from tests.support.api import upload


@pytest.fixture
def served(client, archives):
    for name in ("classifier", "add_scaled", "tuple_out"):
        assert upload(client, name, archives[name]).status_code == 201
    return client


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_npy_in_json_out_matches_in_process(served, archives):
    x = np.random.rand(2, 320).astype(np.float32)
    r = served.post("/models/classifier/predict", content=npy_bytes(x),
                    headers={"content-type": "application/x-npy"})
    assert r.status_code == 200, r.text
    expected = torch.jit.load(str(archives["classifier"]))(torch.from_numpy(x))
    assert np.allclose(r.json()["outputs"], expected.detach().numpy(), atol=1e-6)


def test_npy_out(served):
    x = np.ones((1, 320), dtype=np.float32)
    r = served.post("/models/classifier/predict", content=npy_bytes(x),
                    headers={"content-type": "application/x-npy", "accept": "application/x-npy"})
    assert r.headers["content-type"] == "application/x-npy"
    out = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert out.shape == (1, 2) and out.dtype == np.float32
    assert r.headers["x-model-version"] == "1"


def test_npz_by_name_and_positional(served):
    x, y = np.ones((1, 2), np.float32), np.full((1, 2), 3, np.float32)
    for body in (npz_bytes(y=y, x=x), npz_bytes(arr_0=x, arr_1=y)):
        r = served.post("/models/add_scaled/predict", content=body,
                        headers={"content-type": "application/x-npz"})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == [[4.0, 4.0]]


def test_npz_out_flattens_tuples(served):
    r = served.post("/models/tuple_out/predict", json={"inputs": [[1.0, 2.0]]},
                    headers={"accept": "application/x-npz"})
    out = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert out["0"].tolist() == [[2.0, 4.0]] and out["1"].tolist() == [3.0]
    r = served.post("/models/tuple_out/predict", json={"inputs": [[1.0, 2.0]]},
                    headers={"accept": "application/x-npy"})
    assert r.status_code == 422 and "not a single tensor" in r.json()["error"]["message"]


def test_bad_binary_bodies_are_4xx(served):
    h = {"content-type": "application/x-npy"}
    assert served.post("/models/classifier/predict", content=b"garbage", headers=h).status_code == 400
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = served.post("/models/classifier/predict", content=obj.getvalue(), headers=h)
    assert r.status_code == 400  # pickled object arrays are refused
    r = served.post("/models/add_scaled/predict", content=npy_bytes(np.ones((1, 2))), headers=h)
    assert r.status_code == 422
    r = served.post("/models/add_scaled/predict", content=npz_bytes(z=np.ones(2)),
                    headers={"content-type": "application/x-npz"})
    assert r.status_code == 422 and "unknown inputs" in r.json()["error"]["message"]
    r = served.post("/models/add_scaled/predict", content=b"PK\x03\x04junk",
                    headers={"content-type": "application/x-npz"})
    assert r.status_code == 400
