"""GET /metrics and GET /models/{name}/stats against real scripted models, lifespan running."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.serving.runtime import LoadedModel
from tests.support.api import AUTH, upload, wait_ready

ROW = [0.5] * 320  # one sample for the classifier (Linear 320 -> ...)


def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, keyed by sample name and label set."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def served(client: TestClient, archives, name: str = "classifier", **fields) -> None:
    assert upload(client, name, archives[name], **fields).status_code == 201


def predict(client: TestClient, name: str, inputs, **kw):
    return client.post(f"/models/{name}/predict", json={"inputs": inputs}, **kw)


def test_after_n_predictions_every_histogram_counts_n(client, archives):
    served(client, archives)
    n = 7
    for _ in range(n):
        assert predict(client, "classifier", [ROW]).status_code == 200
    assert predict(client, "classifier", [[1.0, 2.0]]).status_code == 422  # wrong width
    s = scrape(client)
    key = {"model": "classifier", "version": "1"}
    assert value(s, "scriptserve_request_duration_seconds_count", status="ok", **key) == n
    assert value(s, "scriptserve_request_duration_seconds_bucket", status="ok", le="+Inf",
                 **key) == n
    assert value(s, "scriptserve_requests_total", status="ok", **key) == n
    assert value(s, "scriptserve_requests_total", status="client_error", **key) == 1
    assert value(s, "scriptserve_requests_total", status="rejected", **key) == 0
    assert value(s, "scriptserve_queue_duration_seconds_count", **key) == n
    assert value(s, "scriptserve_inference_duration_seconds_count", **key) == n
    executions = client.app.state.registry.get("classifier").batcher.executions
    assert value(s, "scriptserve_batch_size_count", **key) == executions == n
    assert value(s, "scriptserve_batch_executions_total", **key) == executions
    assert value(s, "scriptserve_model_versions_loaded") == 1
    assert value(s, "scriptserve_queue_depth", **key) == 0
    assert value(s, "scriptserve_requests_in_flight", **key) == 0
    params = client.app.state.registry.get("classifier").model.parameter_bytes()
    assert value(s, "scriptserve_model_memory_bytes", device="cpu", **key) == params > 0
    assert value(s, "scriptserve_uploads_total") == 1
    assert value(s, "scriptserve_model_load_duration_seconds_count") == 1


def test_batch_size_histogram_agrees_with_executions_under_concurrency(client, archives):
    served(client, archives, "tuple_out", batching="on")
    rows = [1, 3, 1, 2] * 20  # 80 requests, 140 samples

    def call(n: int) -> int:
        return predict(client, "tuple_out", [[1.0, 2.0, 3.0]] * n).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(call, rows)) == {200}
    s = scrape(client)
    key = {"model": "tuple_out", "version": "1"}
    executions = client.app.state.registry.get("tuple_out").batcher.executions
    assert value(s, "scriptserve_batch_size_count", **key) == executions
    assert value(s, "scriptserve_batch_executions_total", **key) == executions
    assert value(s, "scriptserve_batch_size_sum", **key) == sum(rows)
    assert value(s, "scriptserve_batch_samples_total", **key) == sum(rows)
    assert value(s, "scriptserve_request_duration_seconds_count", status="ok", **key) == len(rows)
    assert value(s, "scriptserve_queue_duration_seconds_count", **key) == len(rows)
    stats = client.get("/models/tuple_out/stats").json()["versions"][0]
    assert stats["total"]["executions"] == executions
    assert stats["total"]["mean_batch_size"] == pytest.approx(sum(rows) / executions)


class GatedModel(LoadedModel):
    """The served scripted module, held inside forward until the test opens the gate."""

    def __init__(self, inner: LoadedModel) -> None:
        super().__init__(inner.module, "cpu")
        self.gate = threading.Event()
        self.entered = threading.Event()

    def forward(self, inputs):
        self.entered.set()
        self.gate.wait(30)
        return super().forward(inputs)


def test_a_request_refused_by_a_full_queue_is_counted_as_rejected(settings, archives):
    settings.max_queue_size = 1
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        served(client, archives, "tuple_out", batching="off")
        batcher = client.app.state.registry.get("tuple_out").batcher
        gated = batcher.model = GatedModel(batcher.model)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(predict, client, "tuple_out", [[1.0, 2.0, 3.0]])
            assert gated.entered.wait(30)
            second = pool.submit(predict, client, "tuple_out", [[1.0, 2.0, 3.0]])
            while batcher.queue_depth < 1:
                threading.Event().wait(0.005)
            busy = scrape(client)
            refused = predict(client, "tuple_out", [[1.0, 2.0, 3.0]])
            gated.gate.set()
            assert first.result().status_code == second.result().status_code == 200
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
        key = {"model": "tuple_out", "version": "1"}
        assert value(busy, "scriptserve_queue_depth", **key) == 1
        assert value(busy, "scriptserve_requests_in_flight", **key) == 2
        s = scrape(client)
        assert value(s, "scriptserve_requests_total", status="rejected", **key) == 1
        assert value(s, "scriptserve_request_duration_seconds_count", status="rejected", **key) == 1
        assert value(s, "scriptserve_requests_total", status="ok", **key) == 2
        assert value(s, "scriptserve_queue_duration_seconds_count", **key) == 2
        assert value(s, "scriptserve_requests_in_flight", **key) == 0
        total = client.get("/models/tuple_out/stats").json()["versions"][0]["total"]
        assert total["by_status"]["rejected"] == 1 and total["errors"] == 1


def test_stats_percentiles_match_the_latencies_in_the_access_log(client, archives, caplog):
    served(client, archives)
    caplog.set_level(logging.INFO, logger="app.access")
    for _ in range(40):
        assert predict(client, "classifier", [ROW]).status_code == 200
    durations = [r.fields["duration_ms"] / 1000 for r in caplog.records
                 if r.name == "app.access" and r.fields["path"] == "/models/classifier/predict"]
    assert len(durations) == 40
    body = client.get("/models/classifier/stats").json()
    assert body["name"] == "classifier" and body["window_s"] == 60.0
    version = body["versions"][0]
    assert version["version"] == 1 and version["queue_depth"] == 0
    window, total = version["window"], version["total"]
    p50, p90, p99 = np.percentile(durations, [50, 90, 99])
    expected = {"p50": p50, "p90": p90, "p99": p99, "max": max(durations)}
    for key, ms in expected.items():
        assert window["request_s"][key] == pytest.approx(ms, abs=1e-6)  # log rounds to 1 us
    assert window["requests"] == total["requests"] == 40
    assert window["executions"] == total["executions"] == 40
    assert total["request_s"]["max"] == window["request_s"]["max"]
    for key in ("p50", "p90", "p99"):
        assert total["request_s"][key] == pytest.approx(window["request_s"][key], rel=0.05)
        for part in ("queue_s", "inference_s"):
            assert window[part][key] <= window[part]["max"]
    assert total["throughput_rps"] > 0


def test_unknown_names_never_become_label_values(client, archives):
    served(client, archives)
    assert predict(client, "no-such-model", [ROW]).status_code == 404
    assert client.post("/models/classifier/versions/9/predict", json={"inputs": [ROW]}
                       ).status_code == 404
    assert client.get("/models/no-such-model/stats").status_code == 404
    text = client.get("/metrics").text
    assert "no-such-model" not in text and 'version="9"' not in text


def test_a_deleted_version_leaves_the_exposition(client, archives):
    served(client, archives, "tuple_out")
    served(client, archives, "tuple_out")
    predict(client, "tuple_out", [[1.0, 2.0, 3.0]])
    assert client.delete("/models/tuple_out/versions/1", headers=AUTH).status_code == 200
    s = scrape(client)
    assert value(s, "scriptserve_model_versions_loaded") == 1
    assert not [k for k in s if ("version", "1") in k[1]]
    assert value(s, "scriptserve_queue_depth", model="tuple_out", version="2") == 0


def test_upload_failures_are_counted_by_reason(client, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a zip at all")
    assert upload(client, "junk", junk).status_code == 400
    s = scrape(client)
    assert value(s, "scriptserve_uploads_total") == 1
    assert value(s, "scriptserve_upload_failures_total", reason="invalid_archive") == 1
    assert "junk" not in client.get("/metrics").text


def test_switched_off_metrics_are_404_and_predictions_still_work(settings, archives):
    settings.metrics_enabled = False
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        served(client, archives)
        response = predict(client, "classifier", [ROW])
        assert response.status_code == 200 and response.headers["x-request-id"]
        assert client.get("/metrics").status_code == 404
        assert client.get("/models/classifier/stats").status_code == 404
        assert client.app.state.registry.get("classifier").batcher.observer is None


def test_openmetrics_is_served_when_asked_for(client, archives):
    served(client, archives)
    predict(client, "classifier", [ROW])
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    assert "scriptserve_request_duration_seconds_bucket" in response.text


def test_metrics_follow_the_inference_token(settings, archives):
    settings.inference_token = "reader-token"
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert client.get("/metrics").status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer reader-token"})
        assert ok.status_code == 200


def test_stats_of_an_idle_version_are_empty_not_missing(client, archives):
    served(client, archives, "dict_out")
    body = client.get("/models/dict_out/stats").json()
    assert [v["version"] for v in body["versions"]] == [1]
    assert body["versions"][0]["total"]["requests"] == 0
    assert body["versions"][0]["total"]["mean_batch_size"] is None
    assert body["versions"][0]["window"]["request_s"]["p99"] is None


def test_store_convergence_is_measured(client, archives):
    served(client, archives)
    s = scrape(client)
    assert value(s, "scriptserve_store_syncs_total") >= 1
    assert value(s, "scriptserve_store_sync_errors_total") == 0
    assert value(s, "scriptserve_store_last_sync_timestamp_seconds") > 1.7e9
    assert value(s, "scriptserve_store_versions_served", model="classifier") == 1
    # a version another server committed: known after the next sync, served once loaded
    client.app.state.registry.store.commit(
        _staged(client, archives["classifier"]), "classifier", None, {})
    client.portal.call(client.app.state.store_sync.sync)
    s = scrape(client)
    assert value(s, "scriptserve_store_versions_known", model="classifier") == 2
    assert value(s, "scriptserve_store_versions_served", model="classifier") == 2


def _staged(client, archive):
    store = client.app.state.registry.store
    folder = store.new_staging_dir()
    (folder / "model.torchscript").write_bytes(archive.read_bytes())
    return folder
