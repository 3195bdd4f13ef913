"""``scriptserve compile``: the same compiler, offline."""

from __future__ import annotations

import json

import torch

from app.cli import main
from app.examples import InputConfirm
from tests.support.compile_sources import classification_weights, pickled_module, write_source


def test_compile_source_with_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights, eager = classification_weights(tmp_path)
    write_source(tmp_path, "classification")
    out, report = tmp_path / "model.torchscript", tmp_path / "report.json"
    code = main(["compile", "classification.py:Classification", "--weights", str(weights),
                 "--example", "1x320:float32", "-o", str(out), "--report", str(report)])
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "with torch.jit.script" in err and f"wrote {out}" in err
    module = torch.jit.load(str(out))
    x = torch.randn(4, 320)
    assert (module(x) - eager(x)).abs().max().item() <= 1e-5
    assert json.loads(report.read_text())["method"] == "script"


def test_compile_builtin_architecture_with_default_example(tmp_path, capsys):
    weights, eager = classification_weights(tmp_path, fmt="safetensors")
    out = tmp_path / "clf.torchscript"
    assert main(["compile", "Classification", "--weights", str(weights), "-o", str(out)]) == 0
    x = torch.randn(2, 320)
    assert torch.allclose(torch.jit.load(str(out))(x), eager(x), atol=1e-5)


def test_trace_divergence_fails_with_exit_1_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_source(tmp_path, "input_confirm")
    out = tmp_path / "ic.torchscript"
    code = main(["compile", "input_confirm.py:InputConfirm", "--method", "trace", "--example", "1x8",
                 "-o", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "failed (trace_diverged)" in err and "if x.sum() > 0:" in err
    assert not out.exists() and list(tmp_path.glob(".*partial")) == []
    assert main(["compile", "input_confirm.py:InputConfirm", "--example", "1x8", "-o", str(out)]) == 0
    x = -torch.rand(1, 8)
    assert torch.equal(torch.jit.load(str(out))(x), InputConfirm()(x))


def test_pickled_module_needs_the_trust_flag(tmp_path, capsys):
    path = pickled_module(tmp_path)
    out = tmp_path / "p.torchscript"
    assert main(["compile", "Classification", "--weights", str(path), "-o", str(out)]) == 2
    assert "whole pickled module" in capsys.readouterr().err
    assert main(["compile", "pickled", "--weights", str(path), "--trust-pickled-module",
                 "--example", "1x320", "-o", str(out)]) == 0
    assert out.exists()
