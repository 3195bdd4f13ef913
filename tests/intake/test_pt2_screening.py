"""Screening .pt2 archives before torch sees them (app.intake.pt2_screening)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from app.errors import InvalidArchiveError, ModelLoadError, UnsafeArchiveError
from app.intake.archive import inspect_zip
from app.intake.gate import ArchiveGate
from app.intake.pt2_screening import elf_imports, library_findings, screen_pt2, target_problem
from app.serving.exported import ExportedModel, load_exported_program
from tests.support import pt2

STATIC = ArchiveGate(trial=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pt2.export_classifier(tmp_path_factory.mktemp("pt2") / "clf.pt2")


def test_an_exported_program_is_recognized_from_its_contents_not_its_name(exported, tmp_path):
    renamed = shutil.copy(exported, tmp_path / "model.torchscript")
    info = STATIC.admit(Path(renamed))
    assert info.kind == "exported_program"


def test_a_refused_op_in_the_graph_is_named(exported, tmp_path):
    bad = pt2.rewrite(exported, tmp_path / "op.pt2", {"models/model.json": pt2.replace_text(
        "torch.ops.aten.sigmoid.default", "torch.ops.aten.from_file.default")})
    with pytest.raises(UnsafeArchiveError, match=r"aten\.from_file\.default \(reads a file\)"):
        STATIC.admit(bad)


def test_a_python_callable_as_node_target_is_refused(exported, tmp_path):
    # torch's deserializer would resolve this with getattr from the torch module: os.system
    bad = pt2.rewrite(exported, tmp_path / "call.pt2", {"models/model.json": pt2.replace_text(
        "torch.ops.aten.sigmoid.default", "torch.serialization.os.system")})
    with pytest.raises(UnsafeArchiveError, match="not an operator"):
        STATIC.admit(bad)


def test_a_sample_input_pickle_calling_a_global_is_refused_and_never_run(exported, tmp_path):
    marker = tmp_path / "PWNED"
    bad = pt2.rewrite(exported, tmp_path / "pickle.pt2", {
        "sample_inputs/model.pt": pt2.pickle_calling_system(f"touch {marker}")})
    with pytest.raises(UnsafeArchiveError, match="system"):
        STATIC.admit(bad)
    # even past the screen, the loader unpickles with weights_only=True: refused, not run
    with pytest.raises(Exception, match="(?i)weights.only|unsupported global|not allowed"):
        load_exported_program(bad)
    with pytest.raises(ModelLoadError):
        ExportedModel.load(bad, "cpu")
    assert not marker.exists()


def test_pickled_weights_are_refused(exported, tmp_path):
    bad = pt2.rewrite(exported, tmp_path / "pickled.pt2", {"model_weights_config.json": pt2.mark_pickled})
    with pytest.raises(UnsafeArchiveError, match="pickled tensor"):
        STATIC.admit(bad)
    with pytest.raises(ModelLoadError, match="pickled"):
        ExportedModel.load(bad, "cpu")


def test_a_pt2_marker_with_neither_program_nor_library_is_400(tmp_path):
    path = tmp_path / "empty.pt2"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x/archive_format", "pt2")
        zf.writestr("x/byteorder", "little")
    with pytest.raises(InvalidArchiveError, match="neither an exported program"):
        inspect_zip(path)


def test_torch_cond_passes_and_other_higher_order_ops_do_not():
    assert target_problem("torch.ops.higher_order.cond") is None
    assert target_problem("torch.ops.aten.linear.default") is None
    assert target_problem("_operator.getitem") is None
    assert target_problem("torch.ops.higher_order.invoke_subgraph") is not None
    assert target_problem("torch.ops.c10d.allreduce_.default") is not None
    assert target_problem("builtins.eval") is not None


class Branchy(torch.nn.Module):
    """InputConfirm rewritten with torch.cond: exportable, both branches kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda t: t.clone(), lambda t: -t, (x,))


def test_a_torch_cond_program_is_screened_loaded_and_runs_both_branches(tmp_path):
    path = tmp_path / "cond.pt2"
    torch.export.save(torch.export.export(Branchy(), (torch.rand(2, 8),)), str(path))
    STATIC.admit(path)
    model = ExportedModel.load(path, "cpu")
    assert not model.graph_findings()
    x = torch.rand(2, 8)
    assert torch.equal(model.forward([x]), x) and torch.equal(model.forward([-x]), x)
    assert "cond" in model.code("code")["forward"]


def test_a_static_batch_program_says_why_it_is_not_batched(tmp_path):
    model = ExportedModel.load(pt2.export_classifier(tmp_path / "static.pt2", dynamic=False), "cpu")
    assert model.batch.unbatchable and "exactly 2 rows" in model.batch.unbatchable


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build a shared library")
def test_a_library_importing_system_is_refused(tmp_path):
    source = tmp_path / "evil.c"
    source.write_text('#include <stdlib.h>\nint run(void) { return system("id"); }\n')
    library = tmp_path / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    data = library.read_bytes()
    assert "system" in {s.split("@")[0] for s in elf_imports(data)}
    findings = library_findings(data, "data/aotinductor/model/evil.so")
    assert findings and "starts or controls processes" in str(findings[0])
    package = tmp_path / "evil.pt2"
    with zipfile.ZipFile(package, "w") as zf:
        zf.writestr("p/archive_format", "pt2")
        zf.writestr("p/data/aotinductor/model/evil.so", data)
    info = inspect_zip(package)
    assert info.kind == "aoti"
    with pytest.raises(UnsafeArchiveError, match="import system"):
        screen_pt2(package, info)
    with pytest.raises(UnsafeArchiveError, match="switched off"):
        screen_pt2(package, info, allow_aoti=False)


def test_a_library_outside_the_model_folder_is_a_nested_binary(tmp_path):
    package = tmp_path / "stray.pt2"
    with zipfile.ZipFile(package, "w") as zf:
        zf.writestr("p/archive_format", "pt2")
        zf.writestr("p/models/model.json", "{}")
        zf.writestr("p/extra/lib.so", b"\x7fELF")
    with pytest.raises(UnsafeArchiveError, match="nested archive or binary"):
        inspect_zip(package)
