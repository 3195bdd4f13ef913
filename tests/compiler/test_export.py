"""method=export through POST /models: the tutorial's lesson in torch.export (real compile processes)."""

from __future__ import annotations

import torch

from app.examples import InputConfirm
from tests.compiler.test_api import X8, X320, client, predict, upload_eager  # noqa: F401 - fixture
from tests.support.compile_sources import write_source


def test_input_confirm_cannot_be_exported_and_the_422_says_why(client, tmp_path):  # noqa: F811
    source = write_source(tmp_path, "input_confirm")
    r = upload_eager(client, "ic", {"source": source}, entrypoint="InputConfirm", method="export",
                     example_inputs=X8)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "compile_export_data_dependent"
    message = error["message"]
    assert "input_confirm.py line 7: `if x.sum() > 0:`" in message
    assert "branches on the values of a tensor" in message and "data-dependent" in message
    assert "torch.cond" in message and "method=script" in message
    assert client.get("/models/ic").status_code == 404
    # the same source with method=script compiles the if, and serves both branches
    r = upload_eager(client, "ic", {"source": source}, entrypoint="InputConfirm", method="script",
                     example_inputs=X8)
    assert r.status_code == 201, r.text
    x = torch.rand(1, 8)
    assert torch.equal(predict(client, "ic", -x), InputConfirm()(-x))


def test_classification_exported_is_served_as_an_exported_program(client, tmp_path):  # noqa: F811
    source = write_source(tmp_path, "classification")
    r = upload_eager(client, "clf", {"source": source}, entrypoint="Classification", method="export",
                     example_inputs=X320)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["format"] == "exported_program" and info["compile"]["method"] == "export"
    assert all(c["ok"] for c in info["compile"]["checks"]["reloaded_vs_exported"])
    assert info["batching"]["enabled"] is True
    x = torch.randn(4, 320)
    archive = tmp_path / "clf.pt2"
    archive.write_bytes(client.get("/models/clf/archive").content)
    local = torch.export.load(str(archive)).module()(x)
    assert (predict(client, "clf", x) - local).abs().max().item() < 1e-6


def test_method_auto_still_scripts(client, tmp_path):  # noqa: F811
    source = write_source(tmp_path, "classification")
    r = upload_eager(client, "clf", {"source": source}, entrypoint="Classification", example_inputs=X320)
    assert r.status_code == 201 and r.json()["format"] == "torchscript"
    assert r.json()["compile"]["method"] == "script"


def test_format_and_method_must_agree(client, tmp_path):  # noqa: F811
    source = write_source(tmp_path, "classification")
    r = upload_eager(client, "clf", {"source": source}, entrypoint="Classification", method="trace",
                     format="aoti", example_inputs=X320)
    assert r.status_code == 400 and "method=export" in r.json()["error"]["message"]


def test_offline_compile_with_method_export_writes_a_pt2(tmp_path, capsys):
    from app.cli import main
    from tests.support.compile_sources import classification_weights

    weights, eager = classification_weights(tmp_path)
    out = tmp_path / "clf.pt2"
    assert main(["compile", "Classification", "--weights", str(weights), "--method", "export",
                 "-o", str(out)]) == 0, capsys.readouterr().err
    assert "with torch.export" in capsys.readouterr().err
    x = torch.randn(3, 320)
    assert (torch.export.load(str(out)).module()(x) - eager(x)).abs().max().item() <= 1e-5
