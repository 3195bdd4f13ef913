"""Triton's extensions over HTTP: model configuration, repository index / load / unload, statistics."""

from __future__ import annotations

from tests.support.api import AUTH, upload

EXAMPLE = '[{"shape": [1, 320], "dtype": "float32"}]'


def infer(client, name, rows=2):
    body = {"inputs": [{"name": "x", "shape": [rows, 320], "datatype": "FP32", "data": [0.1] * (320 * rows)}]}
    r = client.post(f"/v2/models/{name}/infer", json=body)
    assert r.status_code == 200, r.text
    return r


def test_model_config_from_the_upload(client, archives):
    assert upload(client, "c", archives["classifier"], example_inputs=EXAMPLE,
                  max_batch_size=16, max_batch_delay_ms=2).status_code == 201
    config = client.get("/v2/models/c/config").json()
    assert config["name"] == "c" and config["platform"] == "pytorch_libtorch"
    assert config["max_batch_size"] == 16
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "format": "FORMAT_NONE",
                                "dims": [320], "optional": False}]
    assert config["output"][0]["name"] == "output__0" and config["output"][0]["dims"] == [2]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert config["version_policy"] == {"specific": {"versions": [1]}}
    assert client.get("/v2/models/c/versions/1/config").json() == config
    assert client.get("/v2/models/c/versions/9/config").status_code == 404
    assert client.get("/v2/models/nope/config").json() == {"error": "no model named 'nope'"}


def test_unbatched_config_keeps_full_dims(client, archives):
    r = upload(client, "c", archives["classifier"], example_inputs=EXAMPLE, batching="off")
    assert r.status_code == 201
    config = client.get("/v2/models/c/config").json()
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"][0]["dims"] == [1, 320]


def test_repository_index_unload_and_load(client, archives):
    assert upload(client, "c", archives["classifier"]).status_code == 201
    assert upload(client, "c", archives["classifier"]).status_code == 201
    index = client.post("/v2/repository/index").json()
    assert index == [{"name": "c", "version": "1", "state": "READY"},
                     {"name": "c", "version": "2", "state": "READY"}]
    assert client.post("/v2/repository/models/c/unload").status_code == 401
    assert client.post("/v2/repository/models/c/unload", headers=AUTH).status_code == 200
    assert client.post("/v2/repository/index", json={"ready": True}).json() == []
    states = {(e["version"], e["state"], e.get("reason")) for e in client.post("/v2/repository/index").json()}
    assert states == {("1", "UNAVAILABLE", "unloaded"), ("2", "UNAVAILABLE", "unloaded")}
    r = client.post("/v2/models/c/infer", json={"inputs": [{"name": "x", "shape": [1, 1],
                                                            "datatype": "FP32", "data": [1]}]})
    assert r.status_code == 404 and "unloaded" in r.json()["error"]
    assert client.get("/v2/models/c/ready").status_code == 404
    assert client.post("/v2/repository/models/c/load", headers=AUTH).status_code == 200
    assert len(client.post("/v2/repository/index", json={"ready": True}).json()) == 2
    infer(client, "c")
    assert client.post("/v2/repository/models/nope/load", headers=AUTH).status_code == 404
    r = client.post("/v2/repository/models/c/load", headers=AUTH,
                    json={"parameters": {"config": "{}"}})
    assert r.status_code == 400 and "not supported" in r.json()["error"]


def test_deleting_an_unloaded_model_removes_it_from_the_store(client, archives):
    assert upload(client, "c", archives["classifier"]).status_code == 201
    assert client.post("/v2/repository/models/c/unload", headers=AUTH).status_code == 200
    assert client.delete("/models/c", headers=AUTH).status_code in (200, 204)
    assert client.post("/v2/repository/index").json() == []


def test_statistics_in_tritons_shape(client, archives):
    assert upload(client, "c", archives["classifier"]).status_code == 201
    for _ in range(3):
        infer(client, "c", rows=2)
    stats = client.get("/v2/models/c/stats").json()["model_stats"]
    assert len(stats) == 1
    s = stats[0]
    assert s["name"] == "c" and s["version"] == "1"
    assert s["inference_count"] == 6 and s["execution_count"] == 3
    assert s["inference_stats"]["success"]["count"] == 3 and s["inference_stats"]["success"]["ns"] > 0
    assert s["inference_stats"]["compute_infer"]["count"] == 3
    assert s["last_inference"] > 0
    assert s["batch_stats"][0]["batch_size"] == 2
    assert client.get("/v2/models/c/versions/1/stats").json()["model_stats"] == stats
    assert [m["name"] for m in client.get("/v2/models/stats").json()["model_stats"]] == ["c"]
    assert client.get("/v2").json()["extensions"] == [
        "binary_tensor_data", "model_configuration", "model_repository", "statistics"]
