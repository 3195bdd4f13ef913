"""Loaded ``.pt2`` programs: ExportedPrograms (``torch.export.save``) and AOTInductor packages.

Both implement ``LoadedModel``'s interface (signature, forward, code, batch limits), so the
registry, batcher, metrics and routes serve them like TorchScript modules.

ExportedPrograms are not loaded with ``torch.export.load``, which unpickles flagged weights
and constants with ``weights_only=False`` and falls back to it for sample inputs: this module
reads the archive with torch's own pieces, refuses every pickled payload, and loads the sample
inputs with ``weights_only=True`` (``load_exported_program``). The PT2 reader and deserializer
are private torch APIs; torch is pinned (constraints-cpu.txt), and a torch without them fails
the load with a clear 422 rather than falling back to the unsafe path.
"""

from __future__ import annotations

import io
import json
import math
import operator
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from app.errors import ModelLoadError, exception_line
from app.intake.pt2_screening import ALLOWED_BUILTINS, ALLOWED_HIGHER_ORDER
from app.intake.screening import Finding, op_problem
from app.serving.runtime import (
    ArgSpec,
    BatchDim,
    LoadedModel,
    Signature,
    floating_dtype,
    load_lock,
    to_host,
)

_BUILTIN_MODULES: dict[Any, str] = {operator: "_operator", math: "math"}


# ExportedProgram ---------------------------------------------------------------------------
def load_exported_program(path: Path) -> Any:
    """Deserialize the single program in a ``torch.export.save`` archive, pickles refused."""
    try:
        from torch._export.serde import schema
        from torch._export.serde.serialize import ExportedProgramDeserializer, _bytes_to_dataclass
        from torch.export.pt2_archive._package import (
            PT2ArchiveReader,
            _load_constants,
            _load_state_dict,
        )
    except ImportError as exc:  # pragma: no cover - only on an unpinned torch
        raise ModelLoadError(f"this torch cannot read ExportedProgram archives safely: {exc}") from None
    reader = PT2ArchiveReader(str(path))
    names = list(reader.archive_file.get_all_records())
    programs = sorted(n for n in names if n.startswith("models/") and n.endswith(".json"))
    if len(programs) != 1:
        raise ModelLoadError(
            f"the .pt2 archive holds {len(programs)} exported programs; serve one per upload")
    model = programs[0][len("models/"):-len(".json")]
    from torch.export.pt2_archive.constants import (
        CONSTANTS_CONFIG_FILENAME_FORMAT,
        WEIGHTS_CONFIG_FILENAME_FORMAT,
    )

    configs = (WEIGHTS_CONFIG_FILENAME_FORMAT.format(model), CONSTANTS_CONFIG_FILENAME_FORMAT.format(model))
    for config in configs:
        if config in names and _uses_pickle(reader.read_bytes(config)):
            raise ModelLoadError("the .pt2 archive carries pickled weights or objects; refused")
    serialized = _bytes_to_dataclass(schema.ExportedProgram, reader.read_bytes(programs[0]))
    state_dict = _load_state_dict(reader, model)
    constants = _load_constants(reader, model)
    if isinstance(state_dict, bytes) or isinstance(constants, bytes):
        raise ModelLoadError("the .pt2 archive uses the legacy pickled weight format; refused")
    sample_name = f"data/sample_inputs/{model}.pt"
    sample: Any = b""
    if sample_name in names:
        raw = reader.read_bytes(sample_name)
        sample = torch.load(io.BytesIO(raw), weights_only=True) if raw else b""
    return ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, sample)


def _uses_pickle(raw: bytes) -> bool:
    config = json.loads(raw).get("config", {})
    return any(meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_"))
               for meta in config.values())


def target_name(target: Any) -> str:
    """``aten::linear``, ``higher_order::cond`` or ``_operator.getitem`` for a node target."""
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order::{target.name()}"
    owner = getattr(target, "__self__", None)
    module = getattr(target, "__module__", None) or _BUILTIN_MODULES.get(owner, "")
    return f"{module}.{getattr(target, '__name__', repr(target))}"


def graph_findings(program: Any) -> list[Finding]:
    """Refused calls in a loaded program's graph and every subgraph (torch.cond branches)."""
    findings: list[Finding] = []
    for qualname, module in program.graph_module.named_modules():
        graph = getattr(module, "graph", None)
        if graph is None:
            continue
        where = f"the graph of {qualname or 'forward'}"
        for node in graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op != "call_function":
                findings.append(Finding(f"{node.op} {node.target}", "not an operator call", where))
                continue
            name = target_name(node.target)
            if name.startswith("higher_order::"):
                problem = None if name.split("::")[1] in ALLOWED_HIGHER_ORDER else "higher-order operator"
            elif "::" in name:
                problem = op_problem(name)
            else:
                problem = None if name in ALLOWED_BUILTINS else "a Python callable, not an operator"
            if problem:
                findings.append(Finding(name, problem, where))
    return findings


def exported_batch_dim(program: Any) -> BatchDim:
    """The batch rows a program's first user-input dimension allows."""
    user_inputs = set(program.graph_signature.user_inputs)
    lows: list[int | None] = []
    highs: list[int | None] = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            return BatchDim(unbatchable="the exported program takes non-tensor inputs")
        if value.dim() == 0:
            return BatchDim(unbatchable=f"input {node.name} is a scalar: no batch dimension")
        rows: Any = value.shape[0]
        if not isinstance(rows, torch.SymInt):
            return BatchDim(unbatchable=(
                f"the exported program's batch dimension is static: input {node.name} must have "
                f"exactly {rows} rows; export with dynamic_shapes={{'{node.name}': {{0: Dim('batch')}}}} "
                "(or method=export) to batch requests"))
        bounds = program.range_constraints.get(rows.node.expr)
        lows.append(_finite(bounds.lower) if bounds is not None else None)
        highs.append(_finite(bounds.upper) if bounds is not None else None)
    finite = [h for h in highs if h is not None]
    most = min(finite) if finite else None
    least = max((lo for lo in lows if lo is not None), default=0)
    note = f"dynamic batch dimension: {max(least, 1)}..{most if most is not None else 'any'} rows"
    return BatchDim(max_rows=most, note=note)


def _finite(value: Any) -> int | None:
    if not getattr(value, "is_finite", True):  # sympy's int_oo / oo
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    return number if abs(number) < 2**62 else None


class ExportedModel(LoadedModel):
    """An ExportedProgram, unlifted to a GraphModule, on one device."""

    format = "exported_program"

    def __init__(self, program: Any, device: str) -> None:  # noqa: D107 - no super(): no ScriptModule
        self.device = torch.device(device)
        self.on_cuda = self.device.type == "cuda"
        if self.on_cuda:
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, self.device)
        self.program = program
        self.module = program.module()
        self.floating_dtype = floating_dtype(self.module)
        self.batch = exported_batch_dim(program)
        self.signature = _exported_signature(program)

    @classmethod
    def load(cls, path: Path, device: str) -> ExportedModel:
        try:
            with load_lock:
                program = load_exported_program(path)
            return cls(program, device)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"could not load the ExportedProgram: {exception_line(exc)}") from None

    def parameter_bytes(self) -> int:
        tensors = list(self.program.state_dict.values()) + [
            t for t in self.program.constants.values() if isinstance(t, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def forward(self, inputs: list[torch.Tensor]) -> Any:
        if self.on_cuda:
            inputs = [t.to(self.device, non_blocking=True) for t in inputs]
        with torch.inference_mode():
            out = self.module(*inputs)
        return to_host(out) if self.on_cuda else out

    def graph_findings(self) -> list[Finding]:
        return graph_findings(self.program)

    def code(self, view: str) -> dict[str, Any]:
        subgraphs = {name: (sub.code if view == "code" else str(sub.graph))
                     for name, sub in self.program.graph_module.named_children()
                     if isinstance(sub, torch.fx.GraphModule)}
        forward = self.program.graph_module.code if view == "code" else str(self.program.graph)
        return {"view": view, "format": self.format, "forward": forward, "methods": {},
                "submodules": subgraphs,
                "range_constraints": {str(k): str(v) for k, v in self.program.range_constraints.items()},
                "notes": [self.batch.unbatchable or self.batch.note]}


def _exported_signature(program: Any) -> Signature:
    names = program.graph_signature.user_inputs
    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    call = program.module_call_graph[0].signature if program.module_call_graph else None
    shown = list(call.forward_arg_names) if call is not None and call.forward_arg_names else list(names)
    if len(shown) != len(names):
        shown = list(names)
    args = tuple(ArgSpec(shown[i], "Tensor" if isinstance(vals.get(n), torch.Tensor) else
                         type(vals.get(n)).__name__, False) for i, n in enumerate(names))
    outputs = program.graph_signature.user_outputs
    returns = "Tensor" if len(outputs) == 1 else f"Tuple[{', '.join(['Tensor'] * len(outputs))}]"
    return Signature(args, returns)


# AOTInductor -------------------------------------------------------------------------------
_MAX_CHECK = re.compile(r"if \((\w+)_size\[0\] > (\d+)\)")
_STATIC_CHECK = re.compile(r"if \((\d+) != (\w+)_size\[0\]\)")


def aoti_model_name(path: Path) -> str:
    """The model folder under ``data/aotinductor/`` (``model`` for aoti_compile_and_package)."""
    with zipfile.ZipFile(path) as zf:
        folders = {n.split("/")[3] for n in zf.namelist()
                   if n.split("/")[1:3] == ["data", "aotinductor"] and n.count("/") >= 4}
    if len(folders) != 1:
        raise ModelLoadError(f"the AOTInductor package holds {len(folders)} models; serve one per upload")
    return folders.pop()


def aoti_sources(path: Path) -> dict[str, str]:
    """The generated C++ kept in the package (absent when packaged without sources)."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".cpp") and "/data/aotinductor/" in info.filename:
                out[info.filename.rsplit("/", 1)[1]] = zf.read(info).decode("utf-8", "replace")
    return out


def aoti_batch_dim(sources: dict[str, str]) -> BatchDim:
    """Read the input checks the generated wrapper makes on dim 0 (a heuristic, see docs)."""
    wrapper = "\n".join(text for name, text in sources.items() if name.endswith("wrapper.cpp"))
    if not wrapper:
        return BatchDim(note="no generated sources in the package: batching decided by the probe")
    static = _STATIC_CHECK.findall(wrapper)
    if static:
        rows = static[0][0]
        return BatchDim(unbatchable=(
            f"the AOTInductor package was compiled for a static batch of {rows} rows; compile it "
            "from a program exported with a dynamic batch dimension to batch requests"))
    limits = [int(m) for _, m in _MAX_CHECK.findall(wrapper)]
    most = min(limits) if limits else None
    rows = f"up to {most}" if most else "any number of"
    return BatchDim(max_rows=most, note=f"dynamic batch dimension: {rows} rows")


class AOTIModel(LoadedModel):
    """An AOTInductor package's compiled model, run through torch's C++ package loader."""

    format = "aoti"

    def __init__(self, loader: Any, device: str, sources: dict[str, str]) -> None:  # noqa: D107
        from torch.utils import _pytree as pytree

        self.loader = loader
        self.device = torch.device(device)
        self.on_cuda = self.device.type == "cuda"
        self.sources = sources
        in_spec, out_spec = (pytree.treespec_loads(s) for s in loader.get_call_spec())
        self.out_spec = out_spec
        count = in_spec.num_leaves
        self.signature = Signature(tuple(ArgSpec(f"input{i}", "Tensor", False) for i in range(count)),
                                   "Tensor" if out_spec.is_leaf() else "Tuple[Tensor, ...]")
        self.batch = aoti_batch_dim(sources)
        self.metadata = dict(loader.get_metadata())

    @classmethod
    def load(cls, path: Path, device: str) -> AOTIModel:
        try:
            name = aoti_model_name(path)
            index = torch.device(device).index if torch.device(device).type == "cuda" else -1
            with load_lock:
                package_loader: Any = torch._C._aoti.AOTIModelPackageLoader
                meta = package_loader.load_metadata_from_package(str(path), name)
                built_for = meta.get("AOTI_DEVICE_KEY", "cpu")
                if built_for != torch.device(device).type:
                    raise ModelLoadError(
                        f"the AOTInductor package was compiled for {built_for}, not {device}; "
                        f"upload it with device={built_for} or compile it for {device}")
                loader = package_loader(str(path), name, False, 1, index if index is not None else 0)
            return cls(loader, device, aoti_sources(path))
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"could not load the AOTInductor package: {exception_line(exc)}") from None

    def parameter_bytes(self) -> int:
        return 0  # the weights live inside the compiled library

    def forward(self, inputs: list[torch.Tensor]) -> Any:
        from torch.utils import _pytree as pytree

        flat = [t.to(self.device).contiguous() if self.on_cuda else t.contiguous() for t in inputs]
        with torch.inference_mode():
            out = pytree.tree_unflatten(self.loader.boxed_run(flat), self.out_spec)
        return to_host(out) if self.on_cuda else out

    def graph_findings(self) -> list[Finding]:
        return []  # no graph survives compilation; the library was screened (pt2_screening)

    def code(self, view: str) -> dict[str, Any]:
        note = ("an AOTInductor package is compiled native code: there is no graph to show. Below is "
                "the C++ it was generated from, as packaged (nothing proves the library matches it).")
        sources = self.sources if view == "code" else {}
        return {"view": view, "format": self.format, "forward": f"// {note}\n// metadata: {self.metadata}",
                "methods": {}, "submodules": sources, "range_constraints": None,
                "notes": [self.batch.unbatchable or self.batch.note]}
