"""ExportedProgram .pt2 archives through the API: upload, predict, code, archive, refusals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from tests.support import pt2
from tests.support.api import upload


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pt2.export_classifier(tmp_path_factory.mktemp("pt2") / "clf.pt2", max_rows=16)


def test_exported_classifier_serves_what_it_computes_in_process(client, exported):
    r = upload(client, "ep", exported)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["format"] == "exported_program"
    assert info["signature"]["inputs"][0]["name"] == "x"
    # the batch Dim's upper bound caps the batcher
    assert info["batching"]["max_batch_size"] == 16 and "1..16" in info["batching"]["program"]
    x = torch.randn(5, pt2.ROWS)
    served = client.post("/models/ep/predict", json={"inputs": x.tolist()})
    assert served.status_code == 200, served.text
    local = torch.export.load(str(exported)).module()(x)
    assert (torch.tensor(served.json()["outputs"]) - local).abs().max().item() < 1e-6


def test_rows_past_the_dim_range_are_a_422_not_a_500(client, exported):
    upload(client, "ep", exported)
    r = client.post("/models/ep/predict", json={"inputs": [[0.0] * pt2.ROWS] * 17})
    assert r.status_code == 422 and r.json()["error"]["code"] == "model_error"


def test_code_shows_graph_code_graph_and_symbolic_ranges(client, exported):
    upload(client, "ep", exported)
    doc = client.get("/models/ep/code").json()
    assert doc["format"] == "exported_program"
    assert "torch.ops.aten.linear.default" in doc["forward"]
    assert list(doc["range_constraints"].values()) == ["VR[1, 16]"]
    graph = client.get("/models/ep/code?view=graph").json()["forward"]
    assert graph.startswith("graph():") and "call_function[target=torch.ops.aten.sigmoid.default]" in graph
    text = client.get("/models/ep/code", headers={"Accept": "text/plain"}).text
    assert text.startswith("# forward (code)")


def test_archive_download_is_the_pt2_and_loads_with_torch_export(client, exported, tmp_path):
    upload(client, "ep", exported)
    r = client.get("/models/ep/archive")
    assert r.status_code == 200 and 'filename="ep-v1.pt2"' in r.headers["content-disposition"]
    assert r.content == exported.read_bytes()
    program = torch.export.load(io.BytesIO(r.content))
    x = torch.rand(3, pt2.ROWS)
    assert torch.equal(program.module()(x), torch.export.load(str(exported)).module()(x))


def test_static_batch_program_is_served_unbatched_with_the_reason(client, tmp_path):
    path = pt2.export_classifier(tmp_path / "static.pt2", dynamic=False)
    info = upload(client, "st", path).json()
    assert info["batching"]["enabled"] is False
    assert "static" in info["batching"]["reason"] and "exactly 2 rows" in info["batching"]["reason"]
    assert client.post("/models/st/predict", json={"inputs": [[0.5] * pt2.ROWS] * 2}).status_code == 200


@pytest.mark.parametrize(("case", "edits", "status", "words"), [
    ("refused_op", {"models/model.json": pt2.replace_text(
        "torch.ops.aten.sigmoid.default", "torch.ops.aten.from_file.default")}, 422, "from_file"),
    ("python_target", {"models/model.json": pt2.replace_text(
        "torch.ops.aten.sigmoid.default", "torch.serialization.os.system")}, 422, "not an operator"),
    ("pickled_weights", {"model_weights_config.json": pt2.mark_pickled}, 422, "pickled tensor"),
])
def test_hostile_pt2_is_refused_and_nothing_is_stored(client, settings, exported, tmp_path,
                                                      case, edits, status, words):
    bad = pt2.rewrite(exported, tmp_path / f"{case}.pt2", edits)
    r = upload(client, "bad", bad)
    assert r.status_code == status and r.json()["error"]["code"] == "unsafe_archive"
    assert words in r.json()["error"]["message"]
    assert client.get("/health").status_code == 200
    assert client.get("/models/bad").status_code == 404
    assert not (settings.model_store / "bad").exists() or not any((settings.model_store / "bad").iterdir())


def test_a_pickle_calling_a_global_is_refused_before_it_runs(client, settings, exported, tmp_path):
    marker = tmp_path / "PWNED"
    bad = pt2.rewrite(exported, tmp_path / "pickle.pt2", {
        "sample_inputs/model.pt": pt2.pickle_calling_system(f"touch {marker}")})
    r = upload(client, "bad", bad)
    assert r.status_code == 422 and "system" in r.json()["error"]["message"]
    assert not marker.exists()
    assert client.get("/models").json()["models"] == []


def test_an_exported_program_is_served_again_after_a_restart(settings, exported):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.support.api import wait_ready

    x = torch.rand(2, pt2.ROWS)
    with TestClient(create_app(settings)) as first:
        wait_ready(first)
        assert upload(first, "ep", exported).status_code == 201
        before = first.post("/models/ep/predict", json={"inputs": x.tolist()}).json()["outputs"]
    with TestClient(create_app(settings)) as second:
        wait_ready(second)
        assert second.get("/models/ep").json()["versions"][0]["format"] == "exported_program"
        assert second.post("/models/ep/predict", json={"inputs": x.tolist()}).json()["outputs"] == before
