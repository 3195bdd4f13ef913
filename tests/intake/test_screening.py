"""Screening TorchScript sources, pickles and graphs for side effects (app.intake.screening)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from app.errors import InvalidArchiveError, UnsafeArchiveError
from app.intake.gate import ArchiveGate
from app.intake.screening import check_functions, check_module, op_problem, scan_source
from app.intake.trial import TrialLimits, trial_load
from tests.support import hostile

STATIC = ArchiveGate(trial=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hostile.base_archive(tmp_path_factory.mktemp("screen"))


def refused(path: Path) -> str:
    with pytest.raises(UnsafeArchiveError) as info:
        STATIC.admit(path)
    assert info.value.status_code == 422
    return info.value.message


def test_a_crafted_torch_save_really_writes_files_when_not_screened(base, tmp_path, monkeypatch):
    """The threat is real: torch runs edited archive code, in forward and at load."""
    monkeypatch.chdir(tmp_path)
    path = hostile.edit(base, tmp_path / "save.pt", hostile.in_forward(
        '    torch.save(x, "in-forward.bin")\n'))
    torch.jit.load(str(path))(torch.ones(1))
    assert (tmp_path / "in-forward.bin").exists()
    path = hostile.edit(base, tmp_path / "load.pt", hostile.with_setstate(
        '    torch.save(torch.ones([1]), "at-load.bin")\n'), data_pkl=hostile.SETSTATE_PKL)
    torch.jit.load(str(path))
    assert (tmp_path / "at-load.bin").exists()


@pytest.mark.parametrize(("statement", "named"), [
    ('    torch.save(x, "f")\n', "aten::save"),
    ('    _0 = torch.from_file("/etc/passwd", None, 4)\n', "aten::from_file"),
    ('    torch.autograd.save(x, "f")\n', "aten::save"),
    ('    ops.aten.save(x, "f")\n', "aten::save"),
    ('    _0 = getattr(torch, "save")\n', "torch"),
    ("    _0 = ops.prim.rpc_async()\n", "prim::rpc_async"),
    ("    _0 = ops.prim.PythonOp()\n", "prim::PythonOp"),
    ("    _0 = ops.c10d.barrier(x)\n", "c10d::barrier"),
    ("    _0 = ops.debugprims.load_tensor()\n", "debugprims::load_tensor"),
    ("    _0 = ops.my_extension.run(x)\n", "my_extension::run"),
    ('    _0 = __torch__.torch.classes.dist_c10d.FileStore("f", 1)\n',
     "__torch__.torch.classes.dist_c10d.FileStore"),
    ("    _0 = torch.classes.c10d.ProcessGroup\n", "torch.classes"),
])
def test_refused_ops_are_named_with_file_and_line(base, tmp_path, statement, named):
    path = hostile.edit(base, tmp_path / "op.pt", hostile.in_forward(statement))
    message = refused(path)
    assert named in message
    assert "code/__torch__/tests/support/hostile.py line 8" in message


def test_op_in_setstate_is_refused_before_torch_runs_it(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = hostile.edit(base, tmp_path / "load.pt", hostile.with_setstate(
        '    torch.save(torch.ones([1]), "at-load.bin")\n'), data_pkl=hostile.SETSTATE_PKL)
    assert "aten::save" in refused(path)
    assert not (tmp_path / "at-load.bin").exists()


@pytest.mark.parametrize("global_line", [
    b"c__torch__.torch.classes.dist_c10d\nFileStore\n",
    b"ctorch.distributed.rpc\nrref\n",
    b"cos\nsystem\n",
])
def test_pickle_globals_outside_what_torch_writes_are_refused(base, tmp_path, global_line):
    pkl = b"\x80\x02" + global_line + b")\x81."
    message = refused(hostile.edit(base, tmp_path / "pkl.pt", data_pkl=pkl))
    assert "data.pkl byte 2" in message


def test_malformed_pickle_is_invalid(base, tmp_path):
    with pytest.raises(InvalidArchiveError):
        STATIC.admit(hostile.edit(base, tmp_path / "bad.pt", data_pkl=b"\x80\x02(\xff"))


def test_nested_archive_by_content_is_refused(base, tmp_path):
    path = hostile.edit(base, tmp_path / "nested.pt", extra={"extra/blob": b"PK\x03\x04rest"})
    assert "nested archive" in refused(path)


def test_real_models_pass(archives, tmp_path):
    for path in archives.values():
        STATIC.admit(path)
    quantized = torch.ao.quantization.quantize_dynamic(
        torch.nn.Sequential(torch.nn.Linear(4, 4)), {torch.nn.Linear}, dtype=torch.qint8)
    torch.jit.script(quantized).save(str(tmp_path / "q.pt"))
    STATIC.admit(tmp_path / "q.pt")  # quantized ops and their packed-weight classes are allowed
    STATIC.check_loaded(torch.jit.load(str(tmp_path / "q.pt")))


def test_source_scan_ignores_other_roots_but_not_refused_names_in_strings():
    text = 'def f(self, x):\n  s = "a torch"\n  return self.save(torch.add(x, 1))\n'
    assert scan_source(text, "code/x.py") == []
    # a second, lexer-independent pass: refused names are found even where the tokenizer
    # sees a string or a comment, in case TorchScript's lexer ever disagreed
    text = 'def f(x):\n  s = "torch.save(x)"\n  # ops.c10d.barrier(x)\n  return x\n'
    assert [f.where for f in scan_source(text, "code/x.py")] == ["code/x.py line 2",
                                                                  "code/x.py line 3"]


def test_policy():
    assert op_problem("aten::linear") is None
    assert op_problem("quantized::linear") is None
    assert op_problem("aten::save") and op_problem("prim::rpc_sync") and op_problem("aten::to_here")
    assert "distributed" in (op_problem("_c10d_functional::all_reduce") or "")


def test_graph_check_finds_ops_in_all_methods_and_called_functions(tmp_path):
    """After loading: forward, other methods, submodules and free functions are all checked."""
    path = tmp_path / "reads.pt"
    torch.jit.script(torch.nn.Sequential(hostile.ReadsFile())).save(str(path))
    found = [str(f) for f in check_module(torch.jit.load(str(path)))]
    assert any("aten::from_file" in f and "0.forward" in f for f in found)
    unit = torch._C.CompilationUnit()
    torch._C.import_ir_module(unit, str(path), torch.device("cpu"), {}, False)
    found = [str(f) for f in check_functions(unit.get_functions())]
    assert any("aten::from_file" in f and "ReadsFile.forward" in f for f in found)
    with pytest.raises(UnsafeArchiveError):
        STATIC.check_loaded(torch.jit.load(str(path)))


def test_graph_check_sees_rpc_in_a_scripted_function():
    import torch.distributed.rpc as rpc

    @torch.jit.script
    def remote(x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.script
    def calls(x: torch.Tensor) -> torch.Tensor:
        return rpc.rpc_async("worker", remote, (x,)).wait()

    assert any("prim::rpc_async" in str(f) for f in check_functions([calls]))


def test_trial_process_refuses_what_the_static_screen_would_miss(tmp_path):
    """The child checks every compiled function's graph after its own load."""
    path = tmp_path / "reads.pt"
    torch.jit.script(hostile.ReadsFile()).save(str(path))
    with pytest.raises(UnsafeArchiveError) as info:
        trial_load(path, os.path.getsize(path), TrialLimits())
    assert "aten::from_file" in info.value.message
