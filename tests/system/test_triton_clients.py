"""Triton's and KServe's own clients against a real server process, over HTTP and gRPC:
metadata on a fresh upload and after a restart, config, repository, statistics, infer."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

EXAMPLE = '[{"shape": [1, 320], "dtype": "float32"}]'
X_SPEC = {"name": "x", "datatype": "FP32", "shape": [-1, 320]}


def clients(server):
    return (httpclient.InferenceServerClient(f"127.0.0.1:{server.port}"),
            grpcclient.InferenceServerClient(server.grpc_url))


def native(server, x):
    import httpx
    r = httpx.post(f"{server.url}/models/clf/predict", json={"inputs": x.tolist()}, timeout=30)
    return np.asarray(r.json()["outputs"], dtype="f4")


def infer_both(h, g, x):
    hi = httpclient.InferInput("x", list(x.shape), "FP32")
    hi.set_data_from_numpy(x, binary_data=True)
    gi = grpcclient.InferInput("x", list(x.shape), "FP32")
    gi.set_data_from_numpy(x)
    return h.infer("clf", [hi]).as_numpy("output__0"), g.infer("clf", [gi]).as_numpy("output__0")


def check_metadata(h, g):
    meta = h.get_model_metadata("clf")
    assert meta["inputs"] == [X_SPEC]
    assert meta["outputs"] == [{"name": "output__0", "datatype": "FP32", "shape": [-1, 2]}]
    gmeta = g.get_model_metadata("clf", as_json=True)
    assert gmeta["inputs"][0]["shape"] == ["-1", "320"] and gmeta["inputs"][0]["datatype"] == "FP32"
    for config in (h.get_model_config("clf"), g.get_model_config("clf", as_json=True)["config"]):
        assert config["platform"] == "pytorch_libtorch" and int(config["max_batch_size"]) == 32
        assert [int(d) for d in config["input"][0]["dims"]] == [320]


def test_triton_clients_http_and_grpc_across_a_restart(live_server, archives):
    assert live_server.upload("clf", archives["classifier"], example_inputs=EXAMPLE).status_code == 201
    h, g = clients(live_server)
    assert h.is_server_ready() and g.is_server_ready() and h.is_model_ready("clf") and g.is_model_ready("clf")
    check_metadata(h, g)  # before any prediction
    x = np.random.default_rng(0).standard_normal((3, 320)).astype("f4")
    via_http, via_grpc = infer_both(h, g, x)
    assert np.array_equal(via_http, native(live_server, x)) and np.array_equal(via_grpc, via_http)
    stats = h.get_inference_statistics("clf")["model_stats"][0]
    assert stats["inference_count"] >= 6 and stats["inference_stats"]["success"]["count"] >= 2
    assert [m["state"] for m in g.get_model_repository_index(as_json=True)["models"]] == ["READY"]
    h.close()
    g.close()

    live_server.restart()
    h, g = clients(live_server)
    check_metadata(h, g)  # the stored signature, not the memory of the last process
    via_http, via_grpc = infer_both(h, g, x)
    assert np.array_equal(via_grpc, native(live_server, x))
    admin = {"authorization": f"Bearer {live_server.token}"}
    h.unload_model("clf", headers=admin)
    assert not g.is_model_ready("clf")
    g.load_model("clf", headers=admin)
    assert h.is_model_ready("clf")
    h.close()
    g.close()


def test_kserve_clients_http_and_grpc(live_server, archives):
    """KServe's InferenceRESTClient and InferenceGRPCClient (in a process of their own)."""
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("kserve") is None:  # not imported here: see kserve_clients.py
        pytest.skip("kserve is not installed")

    assert live_server.upload("clf", archives["classifier"], example_inputs=EXAMPLE).status_code == 201
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.kserve_clients", live_server.url, live_server.grpc_url, "clf"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    expected = native(live_server, np.random.default_rng(2).standard_normal((2, 320)).astype("f4"))
    assert seen["rest_ready"] and seen["grpc_ready"]
    assert seen["rest_inputs"] == [X_SPEC] and seen["grpc_inputs"] == [X_SPEC]
    assert np.allclose(seen["rest_output"], expected, atol=1e-6)
    assert np.array_equal(np.asarray(seen["grpc_output"], dtype="f4"), expected)
