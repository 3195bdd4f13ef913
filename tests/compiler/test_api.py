"""Eager uploads through POST /models: each form, each method, each refusal (real compile processes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.examples import InputConfirm
from app.main import create_app
from tests.support.api import AUTH, upload, wait_ready
from tests.support.compile_sources import classification_weights, pickled_module, write_source

X320 = json.dumps([{"shape": [1, 320], "dtype": "float32"}])
X8 = json.dumps([{"shape": [1, 8], "dtype": "float32"}])


def compile_settings(settings: Settings, **changes) -> Settings:
    return settings.model_copy(update={
        "compile_memory_bytes": 2 * 1024**3, "compile_timeout_s": 120.0, **changes})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(compile_settings(settings, architectures=["torch.nn:Linear"]))) as c:
        wait_ready(c)
        yield c


def upload_eager(client: TestClient, name: str, files: dict[str, Path], **fields):
    """POST /models with eager files (weights / source) and compile fields."""
    handles = {key: (path.name, open(path, "rb")) for key, path in files.items()}  # noqa: SIM115
    try:
        data = {"name": name, **{k: str(v) for k, v in fields.items()}}
        return client.post("/models", data=data, files=handles, headers=AUTH)
    finally:
        for _, fh in handles.values():
            fh.close()


def predict(client: TestClient, name: str, x: torch.Tensor) -> torch.Tensor:
    r = client.post(f"/models/{name}/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    return torch.tensor(r.json()["outputs"])


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_weights_for_builtin_classification_predict_like_eager(client, tmp_path, fmt):
    weights, eager = classification_weights(tmp_path, fmt=fmt)
    r = upload_eager(client, "clf", {"weights": weights}, architecture="Classification")
    assert r.status_code == 201, r.text
    report = r.json()["compile"]
    assert report["form"] == "architecture" and report["model"] == "app.examples:Classification"
    assert report["method"] == "script" and report["weights"]["format"] == (
        "safetensors" if fmt == "safetensors" else "state_dict")
    assert report["examples"] == ["1x320 float32"]  # the built-in default
    x = torch.randn(4, 320)
    assert (predict(client, "clf", x) - eager(x)).abs().max().item() <= 1e-5
    info = client.get("/models/clf").json()["versions"][0]
    assert info["source"] == "compiled" and info["compile"]["method"] == "script"


def test_source_and_weights_predict_like_eager(client, tmp_path):
    weights, eager = classification_weights(tmp_path, seed=5)
    source = write_source(tmp_path, "classification")
    r = upload_eager(client, "clf", {"source": source, "weights": weights},
                     entrypoint="Classification", example_inputs=X320)
    assert r.status_code == 201, r.text
    assert r.json()["compile"]["model"] == "classification.py:Classification"
    x = torch.randn(3, 320)
    assert (predict(client, "clf", x) - eager(x)).abs().max().item() <= 1e-5


def test_input_confirm_traced_is_422_and_the_stored_version_survives(client, tmp_path, archives, settings):
    assert upload(client, "ic", archives["classifier"]).status_code == 201
    source = write_source(tmp_path, "input_confirm")
    r = upload_eager(client, "ic", {"source": source}, entrypoint="InputConfirm", method="trace",
                     example_inputs=X8)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "compile_trace_diverged"
    message = error["message"]
    assert "on input 'negated example (-x)'" in message and "max abs diff" in message
    assert "input_confirm.py line 7: `if x.sum() > 0:`" in message
    assert "frozen to the branch" in message and "method=script" in message
    assert "/tmp" not in message and "Traceback" not in message
    assert [v["version"] for v in client.get("/models/ic").json()["versions"]] == [1]
    predict(client, "ic", torch.randn(1, 320))
    assert list((settings.model_store / ".staging").iterdir()) == []


def test_input_confirm_auto_is_scripted_and_keeps_the_if(client, tmp_path):
    source = write_source(tmp_path, "input_confirm")
    r = upload_eager(client, "ic", {"source": source}, entrypoint="InputConfirm", example_inputs=X8)
    assert r.status_code == 201, r.text
    report = r.json()["compile"]
    assert report["method"] == "script" and report["method_requested"] == "auto"
    assert "control flow is compiled" in report["why"]
    code = client.get("/models/ic/code", headers={"Accept": "text/plain"}).text
    assert "if bool(torch.gt(torch.sum(x), 0))" in code
    for x in (torch.rand(1, 8) + 0.1, -torch.rand(1, 8) - 0.1):
        assert torch.equal(predict(client, "ic", x), InputConfirm()(x))


def test_accepted_divergent_trace_is_served_with_a_warning(client, tmp_path):
    source = write_source(tmp_path, "input_confirm")
    r = upload_eager(client, "ic", {"source": source}, entrypoint="InputConfirm", method="trace",
                     example_inputs=X8, accept_divergent_trace="true")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["compile"]["accepted_divergence"] is True
    assert "diverges from the eager model" in body["warnings"][0]
    assert client.get("/models/ic").json()["versions"][0]["warnings"] == body["warnings"]


def test_auto_falls_back_to_trace_when_script_fails(client, tmp_path):
    source = write_source(tmp_path, "unscriptable")
    r = upload_eager(client, "u", {"source": source}, entrypoint="Unscriptable",
                     example_inputs=json.dumps([{"shape": [2, 4]}]))
    assert r.status_code == 201, r.text
    report = r.json()["compile"]
    assert report["method"] == "trace" and "fell back to torch.jit.trace" in report["why"]
    assert 'File "unscriptable.py", line 11' in report["script_error"]
    assert predict(client, "u", torch.ones(3, 4)).shape == (3, 2)  # a traced module serves too


def test_script_failure_is_422_with_the_source_line(client, tmp_path):
    source = write_source(tmp_path, "unscriptable")
    r = upload_eager(client, "u", {"source": source}, entrypoint="Unscriptable", method="script",
                     example_inputs=json.dumps([{"shape": [2, 4]}]))
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "compile_script_failed"
    assert "Comprehension ifs are not supported" in error["message"]
    assert 'File "unscriptable.py", line 11' in error["message"]
    assert "odd = [i for i in range(4) if i % 2]" in error["message"]


def test_a_crashing_source_is_422_and_the_server_keeps_serving(client, tmp_path, archives):
    assert upload(client, "clf", archives["classifier"]).status_code == 201
    r = upload_eager(client, "crash", {"source": write_source(tmp_path, "segfault")},
                     entrypoint="Crash", example_inputs=X8)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == {
        "code": "compile_crashed",
        "message": "the compile process crashed: the task was killed by signal SIGSEGV",
    }
    predict(client, "clf", torch.randn(1, 320))


def test_configured_architecture_with_init_kwargs_and_optimize(client, tmp_path):
    torch.manual_seed(0)
    eager = torch.nn.Linear(4, 2).eval()
    weights = tmp_path / "linear.pt"
    torch.save(eager.state_dict(), weights)
    r = upload_eager(client, "lin", {"weights": weights}, architecture="Linear",
                     init_kwargs='{"in_features": 4, "out_features": 2}', optimize="true",
                     example_inputs=json.dumps([{"shape": [3, 4]}]))
    assert r.status_code == 201, r.text
    report = r.json()["compile"]
    assert report["model"] == "torch.nn:Linear" and report["optimize"]["applied"] is True
    x = torch.randn(2, 4)
    assert (predict(client, "lin", x) - eager(x)).abs().max().item() <= 1e-4


def test_pickled_module_is_refused_without_unpickling(client, tmp_path):
    r = upload_eager(client, "p", {"weights": pickled_module(tmp_path)})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "compile_pickled_module"
    assert "whole pickled module" in error["message"] and "would execute arbitrary code" in error["message"]
    assert "torch.save(model.state_dict(), 'weights.pt')" in error["message"]


def test_pickled_module_is_compiled_when_trusted(settings, tmp_path):
    with TestClient(create_app(compile_settings(settings, trust_pickled_modules=True))) as c:
        wait_ready(c)
        r = upload_eager(c, "p", {"weights": pickled_module(tmp_path)}, example_inputs=X320)
        assert r.status_code == 201, r.text
        assert r.json()["compile"]["form"] == "pickled_module"
        assert r.json()["compile"]["method"] == "script"


def test_source_uploads_can_be_switched_off(settings, tmp_path):
    with TestClient(create_app(compile_settings(settings, allow_source_uploads=False))) as c:
        wait_ready(c)
        r = upload_eager(c, "ic", {"source": write_source(tmp_path, "input_confirm")},
                         entrypoint="InputConfirm", example_inputs=X8)
        assert r.status_code == 403
        assert "switched off" in r.json()["error"]["message"]


def test_eager_uploads_need_the_admin_token(client, tmp_path):
    weights, _ = classification_weights(tmp_path)
    with open(weights, "rb") as fh:
        r = client.post("/models", data={"name": "x", "architecture": "Classification"},
                        files={"weights": ("w.pt", fh)})
    assert r.status_code == 401


def test_malformed_eager_uploads_are_400(client, tmp_path, archives):
    weights, _ = classification_weights(tmp_path)
    source = write_source(tmp_path, "input_confirm")
    cases = [
        ({"weights": weights}, {}, "needs the model it belongs to"),
        ({"weights": weights}, {"architecture": "ResNet"}, "unknown architecture"),
        ({"source": source}, {"entrypoint": "InputConfirm"}, "'example_inputs' is required"),
        ({"source": source}, {"example_inputs": X8}, "'entrypoint' is required"),
        ({"source": source}, {"entrypoint": "InputConfirm", "example_inputs": "[{"}, "not valid JSON"),
        ({"source": source}, {"entrypoint": "InputConfirm", "example_inputs": X8, "method": "jit"},
         "method must be one of"),
        ({"weights": weights}, {"architecture": "Classification", "optimize": "maybe"}, "optimize must be"),
        ({"weights": weights, "file": archives["classifier"]}, {"architecture": "Classification"},
         "not both"),
        ({"file": archives["classifier"]}, {"method": "trace"}, "apply to eager uploads"),
        ({"weights": source}, {"architecture": "Classification"}, "neither a torch.save() file"),
    ]
    for files, fields, expected in cases:
        r = upload_eager(client, "bad", files, **fields)
        assert r.status_code == 400, (fields, r.text)
        assert expected in r.json()["error"]["message"], (fields, r.json())
    assert client.get("/models").json()["models"] == []
