"""The compile pipeline itself (as the compile process and the CLI run it): methods and checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.compiler.compile import compile_eager
from app.compiler.report import Redactor
from app.compiler.spec import ArchitectureSpec, CompileFailure, SourceSpec
from app.examples import InputConfirm
from tests.support.compile_sources import classification_weights, write_source

X8 = [{"shape": [1, 8], "dtype": "float32"}]


def compile_source(folder: Path, name: str, entrypoint: str, examples=X8, **options):
    source = write_source(folder, name)
    spec = SourceSpec(source_file=source.name, source_name=source.name,
                      entrypoint=entrypoint, examples=examples, **options)
    out = folder / "out.torchscript"
    report = compile_eager(spec, folder, out, Redactor({str(source): source.name, str(folder): "."}))
    return report, torch.jit.load(str(out))


def test_trace_of_input_confirm_is_refused_and_explains_the_frozen_branch(tmp_path):
    with pytest.raises(CompileFailure) as info:
        compile_source(tmp_path, "input_confirm", "InputConfirm", method="trace")
    exc = info.value
    assert exc.reason == "trace_diverged"
    assert "negated example (-x)" in exc.message and "max abs diff" in exc.message
    assert "input_confirm.py line 7: `if x.sum() > 0:`" in exc.message
    assert "frozen" in exc.message and "method=script" in exc.message
    assert str(tmp_path) not in exc.message
    assert not (tmp_path / "out.torchscript").exists()


@pytest.mark.parametrize("method", ["auto", "script"])
def test_script_keeps_the_branch(tmp_path, method):
    report, module = compile_source(tmp_path, "input_confirm", "InputConfirm", method=method)
    assert report["method"] == "script" and report["method_requested"] == method
    assert "if bool(" in module.code
    for x in (torch.ones(2, 8), -torch.ones(2, 8), torch.randn(3, 8)):
        assert torch.equal(module(x), InputConfirm()(x))
    assert all(c["ok"] for c in report["checks"]["compiled_vs_eager"])
    reloaded = {c["input"] for c in report["checks"]["reloaded_vs_compiled"]}
    assert reloaded >= {"example", "negated example (-x)"}


def test_accepting_a_divergent_trace_keeps_the_warning(tmp_path):
    report, module = compile_source(tmp_path, "input_confirm", "InputConfirm", method="trace",
                                    accept_divergent_trace=True)
    assert report["method"] == "trace" and report["accepted_divergence"]
    assert report["tracer_warnings"][0]["code"] == "if x.sum() > 0:"
    assert report["tracer_warnings"][0]["line"] == 7
    assert "diverges from the eager model" in report["warnings"][0]
    assert "if" not in module.code  # the frozen branch, knowingly


def test_trace_without_control_flow_passes_every_probe(tmp_path):
    weights, eager = classification_weights(tmp_path)
    report, module = compile_source(tmp_path, "classification", "Classification", method="trace",
                                    examples=[{"shape": [1, 320]}], weights_file=weights.name,
                                    weights_format="state_dict")
    assert report["method"] == "trace" and report["tracer_warnings"] == []
    assert report["warnings"] == []
    x = torch.randn(5, 320)
    assert (module(x) - eager(x)).abs().max() <= 1e-5


def test_auto_falls_back_to_trace_and_says_why(tmp_path):
    report, module = compile_source(tmp_path, "unscriptable", "Unscriptable",
                                    examples=[{"shape": [2, 4]}])
    assert report["method"] == "trace"
    assert report["why"].startswith("auto: torch.jit.script failed (Comprehension ifs are not supported")
    assert "unscriptable.py" in report["script_error"]
    assert module(torch.ones(1, 4)).shape == (1, 2)


def test_script_failure_names_the_source_line(tmp_path):
    with pytest.raises(CompileFailure) as info:
        compile_source(tmp_path, "unscriptable", "Unscriptable", method="script",
                       examples=[{"shape": [2, 4]}])
    assert info.value.reason == "script_failed"
    assert 'File "unscriptable.py", line 11' in info.value.message
    assert "odd = [i for i in range(4) if i % 2]" in info.value.message
    assert str(tmp_path) not in info.value.message


def test_factory_with_init_kwargs_and_optimize(tmp_path):
    report, module = compile_source(tmp_path, "factory", "make_mlp", examples=[{"shape": [4, 4]}],
                                    init_kwargs={"width": 16, "depth": 3}, optimize=True)
    assert report["optimize"]["applied"] is True
    assert report["optimize"]["max_abs_diff"] <= 1e-4
    assert all(c["ok"] for c in report["checks"]["optimized_vs_compiled"])
    assert module(torch.randn(2, 4)).shape == (2, 3)


def test_syntax_error_names_the_line(tmp_path):
    with pytest.raises(CompileFailure) as info:
        compile_source(tmp_path, "syntax_error", "Broken")
    assert info.value.reason == "source_error"
    assert "SyntaxError" in info.value.message and "line 4" in info.value.message
    assert "def forward(self, x)" in info.value.message


def test_error_on_the_examples_names_the_line(tmp_path):
    with pytest.raises(CompileFailure) as info:
        compile_source(tmp_path, "raises_in_forward", "Picky")
    message = info.value.message
    assert message.startswith("the eager model failed on the example inputs: RuntimeError")
    assert "raises_in_forward.py line 7: `return torch.matmul(x, torch.ones(3, 3))`" in message


def test_unknown_entrypoint_lists_the_modules(tmp_path):
    with pytest.raises(CompileFailure, match=r"no class or function 'Nope'.*\['InputConfirm'\]"):
        compile_source(tmp_path, "input_confirm", "Nope")


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), path)
    with pytest.raises(CompileFailure) as info:
        compile_source(tmp_path, "classification", "Classification", examples=[{"shape": [1, 320]}],
                       weights_file=path.name, weights_format="state_dict")
    assert info.value.reason == "weights_mismatch"
    assert "Missing key(s)" in info.value.message and "linear1.weight" in info.value.message


def test_nested_checkpoint_and_integer_inputs(tmp_path):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in emb.state_dict().items()}}, path)
    spec = ArchitectureSpec(architecture="torch.nn:Embedding",
                            init_kwargs={"num_embeddings": 10, "embedding_dim": 3},
                            examples=[{"shape": [2, 5], "dtype": "int64", "high": 10}],
                            weights_file=path.name, weights_format="state_dict")
    report = compile_eager(spec, tmp_path, tmp_path / "emb.torchscript", Redactor())
    assert report["weights"]["notes"] == ["used the checkpoint's 'model_state_dict' entry as the state_dict",
                                          "removed the 'module.' prefix that DataParallel adds"]
    module = torch.jit.load(str(tmp_path / "emb.torchscript"))
    ids = torch.tensor([[1, 9]])
    assert torch.equal(module(ids), emb(ids))
