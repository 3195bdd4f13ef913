"""What a TorchScript archive may do: screening its source, pickles and graphs for side effects.

A TorchScript archive is code, and ``torch.jit.load`` runs some of it (``__setstate__``).
Before torch sees an upload, every ``code/**/*.py`` file is tokenized and every reference
to an operator (``torch.X`` is ``aten::X``, ``ops.NS.X`` is ``NS::X``) or to a custom class
(``__torch__.torch.classes.NS.X``) is checked against the policy below; every pickle's
globals are checked against what torch's own unpickler writes. After loading, the graph of
every compiled function is checked against the same policy (``check_module`` /
``check_functions``). Anything else is refused with a 422 naming the op and where it is.

The policy is an allowlist of operator namespaces with a denylist inside it:

- ``aten`` (tensor maths), ``prim`` (control flow, containers) and ``quantized`` (quantized
  kernels) are allowed; every other namespace (``c10d``, ``_c10d_functional``, ``symm_mem``,
  ``profiler``, ``mkldnn_prepacked``, ``debugprims``, ``inductor``, custom extension ops, ...)
  is refused.
- Inside them, ops with file, network or process side effects are refused: ``aten::save``,
  ``aten::from_file``, RPC (``prim::rpc_*`` and the ``RRef`` ops) and Python calls
  (``prim::PythonOp``).
- Custom (TorchBind) classes are refused except torch's own packed weights for quantized
  kernels (``torch.classes.quantized.*``, ``torch.classes.rnn.*``).
"""

from __future__ import annotations

import io
import pickletools
import re
import tokenize
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from app.errors import InvalidArchiveError, UnsafeArchiveError, exception_line

ALLOWED_NAMESPACES = frozenset({"aten", "prim", "quantized"})
ALLOWED_CLASS_NAMESPACES = frozenset({"quantized", "rnn"})
DENIED_OPS = {
    "aten::save": "writes a file",
    "aten::from_file": "reads a file",
    "prim::PythonOp": "calls Python",
    "prim::IgnoredPythonOp": "calls Python",
    "prim::rpc_async": "makes a remote procedure call",
    "prim::rpc_sync": "makes a remote procedure call",
    "prim::rpc_remote": "makes a remote procedure call",
    "aten::to_here": "fetches a remote value (RPC)",
    "aten::local_value": "uses a remote reference (RPC)",
    "aten::owner": "uses a remote reference (RPC)",
    "aten::owner_name": "uses a remote reference (RPC)",
    "aten::is_owner": "uses a remote reference (RPC)",
    "aten::confirmed_by_owner": "uses a remote reference (RPC)",
}
_NAMESPACE_REASONS = {
    "c10d": "distributed communication",
    "_c10d_functional": "distributed communication",
    "_c10d_functional_autograd": "distributed communication",
    "symm_mem": "distributed communication",
    "_dtensor": "distributed communication",
    "debugprims": "reads files",
}
# Globals torch's TorchScript pickler writes (torch/csrc/jit/serialization/unpickler.cpp);
# ``__torch__.*`` classes are checked separately.
PICKLE_GLOBALS = {
    "torch._utils": {"_rebuild_tensor_v2", "_rebuild_qtensor", "_rebuild_sparse_tensor"},
    "torch._tensor": {"_rebuild_from_type_v2"},
    "torch.jit._pickle": {"build_tensor_from_id", "restore_type_tag", "build_intlist",
                          "build_tensorlist", "build_doublelist", "build_boollist"},
    "builtins": {"complex"},
    "collections": {"OrderedDict"},
    "__main__": {"TensorID", "IntList"},
}
_TORCH_PICKLE_NAMES = {"device", "Tensor", "per_tensor_affine", "per_channel_affine",
                       "per_tensor_symmetric", "per_channel_symmetric",
                       "per_channel_affine_float_qparams"}
# Only GLOBAL names a callable; the other ways of naming one are never written by torch.
_REFUSED_OPCODES = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID"}
_NESTED_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00",
                 b"7z\xbc\xaf\x27\x1c", b"\x28\xb5\x2f\xfd", b"Rar!", b"\x7fELF")
_CLASS_IN_TYPE = re.compile(r"__torch__\.torch\.classes\.[\w.]+")
MAX_SOURCE_BYTES = 16 * 1024**2
MAX_REPORTED = 5


@dataclass(frozen=True)
class Finding:
    """One refused use: what, why, and where in the archive."""

    what: str
    reason: str
    where: str

    def __str__(self) -> str:
        return f"{self.what} ({self.reason}) at {self.where}"


def refuse(findings: list[Finding]) -> UnsafeArchiveError:
    """The 422 for ``findings`` (the first few, with a count of the rest)."""
    shown = "; ".join(str(f) for f in findings[:MAX_REPORTED])
    more = f"; and {len(findings) - MAX_REPORTED} more" if len(findings) > MAX_REPORTED else ""
    return UnsafeArchiveError(
        f"the archive uses {shown}{more}. TorchScript archives may not use file, network, "
        "process or distributed side effects, custom classes or operators outside aten, prim "
        "and quantized (see docs/security.md)"
    )


# policy --------------------------------------------------------------------------------------
def op_problem(op: str) -> str | None:
    """Why the operator ``ns::name`` is refused, or None."""
    if op in DENIED_OPS:
        return DENIED_OPS[op]
    namespace = op.split("::", 1)[0]
    if namespace not in ALLOWED_NAMESPACES:
        reason = _NAMESPACE_REASONS.get(namespace, "operator namespace outside the allowlist")
        return f"{reason}: namespace {namespace!r}"
    return None


def class_problem(qualified: str) -> str | None:
    """Why the class ``__torch__.torch.classes.NS.Name`` (or another qualified name) is refused."""
    parts = qualified.split(".")
    if parts[:3] != ["__torch__", "torch", "classes"]:
        return None
    namespace = parts[3] if len(parts) > 3 else ""
    if namespace in ALLOWED_CLASS_NAMESPACES:
        return None
    return f"custom class namespace {namespace!r}"


# source --------------------------------------------------------------------------------------
def _chains(text: str) -> Iterator[tuple[list[str], int]]:
    """Dotted name chains (``a.b.c``) with their line numbers."""
    chain: list[str] = []
    line = 0
    after_dot = False
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in skip and chain and after_dot:
            continue
        if tok.type == tokenize.NAME and (after_dot or not chain):
            if not chain:
                line = tok.start[0]
            chain.append(tok.string)
            after_dot = False
            continue
        if tok.type == tokenize.OP and tok.string == "." and chain and not after_dot:
            after_dot = True
            continue
        if chain:
            yield chain, line
        chain, after_dot = [], False
        if tok.type == tokenize.NAME:
            chain, line = [tok.string], tok.start[0]
    if chain:
        yield chain, line


def _chain_problem(chain: list[str]) -> tuple[str, str] | None:
    root, rest = chain[0], chain[1:]
    if root == "torch":
        # the importer maps torch.X (and torch.autograd.X) to the builtin aten::X
        names = [c for c in rest if c != "autograd"]
        if not names:
            return "torch", "an indirect reference to the operator namespace"
        if names[0] == "classes":
            return "torch.classes", "custom classes"
        op = f"aten::{names[0]}"
    elif root == "ops":
        if len(rest) < 2:
            return ".".join(chain), "an indirect reference to an operator namespace"
        op = f"{rest[0]}::{rest[1]}"
    elif root == "__torch__":
        qualified = ".".join(chain)
        problem = class_problem(qualified)
        return (qualified, problem) if problem else None
    else:
        return None
    problem = op_problem(op)
    return (op, problem) if problem else None


# Lexer-independent second pass over the raw text (strings and comments included): if
# Python's tokenizer and TorchScript's lexer ever disagreed on where code is, a refused op
# written as ``torch.X`` / ``ops.NS.X`` or a custom class would still be found. It refuses
# such names even inside a string, which real model code does not contain.
_RAW_OP = re.compile(
    r"(?<![\w.])(torch|ops)\s*\.\s*(?:autograd\s*\.\s*)*([A-Za-z_]\w*)(?:\s*\.\s*([A-Za-z_]\w*))?")
_RAW_CLASS = re.compile(r"torch\s*\.\s*classes\s*\.\s*([A-Za-z_]\w*)")


def _raw_findings(text: str, where: str) -> list[Finding]:
    findings = []
    for match in _RAW_OP.finditer(text):
        root, first, second = match.groups()
        if root == "torch":
            op = f"aten::{first}"
        elif second:
            op = f"{first}::{second}"
        else:
            continue
        problem = op_problem(op) if first != "classes" else None
        if problem:
            line = text.count("\n", 0, match.start()) + 1
            findings.append(Finding(op, problem, f"{where} line {line}"))
    for match in _RAW_CLASS.finditer(text):
        qualified = f"__torch__.torch.classes.{match.group(1)}"
        problem = class_problem(qualified)
        if problem:
            line = text.count("\n", 0, match.start()) + 1
            findings.append(Finding(qualified, problem, f"{where} line {line}"))
    return findings


def scan_source(text: str, where: str) -> list[Finding]:
    """Refused operators and classes referenced in one TorchScript source file."""
    findings = []
    try:
        for chain, line in _chains(text):
            hit = _chain_problem(chain)
            if hit:
                findings.append(Finding(hit[0], hit[1], f"{where} line {line}"))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise UnsafeArchiveError(
            f"the TorchScript source {where} cannot be read for screening ({type(exc).__name__})"
        ) from None
    flagged = {f.where for f in findings}  # the raw pass adds only lines the tokens did not
    findings += [f for f in _raw_findings(text, where) if f.where not in flagged]
    return findings


# pickles -------------------------------------------------------------------------------------
def _global_problem(module: str, name: str) -> str | None:
    if module == "__torch__" or module.startswith("__torch__."):
        return class_problem(f"{module}.{name}")
    if module == "torch":
        if name in _TORCH_PICKLE_NAMES or name.endswith("Storage"):
            return None
        return "a torch global torch's pickler does not write"
    if name in PICKLE_GLOBALS.get(module, ()):
        return None
    return "a global torch's pickler does not write"


def scan_pickle(stream: IO[bytes], where: str) -> list[Finding]:
    """Globals in one pickle that torch's TorchScript unpickler should not be asked to build."""
    findings = []
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            if opcode.name in _REFUSED_OPCODES:
                findings.append(Finding(f"pickle opcode {opcode.name}",
                                        "not written by torch", f"{where} byte {pos}"))
            elif opcode.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                problem = _global_problem(module, name)
                if problem:
                    findings.append(Finding(f"{module}.{name}", problem, f"{where} byte {pos}"))
    except (ValueError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        cause = exception_line(exc, 200)
        raise InvalidArchiveError(f"the archive's pickle {where} is malformed ({cause})") from None
    return findings


# the archive ---------------------------------------------------------------------------------
def screen_contents(path: Path, prefix: str) -> None:
    """Read every entry's header, then screen sources and pickles; raise a 422 on findings."""
    findings: list[Finding] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                inner = info.filename[len(prefix) + 1:]
                with zf.open(info) as fh:  # also checks the local header matches the directory
                    head = fh.read(8)
                if not inner.startswith(("data/", "constants/")) and head.startswith(_NESTED_MAGIC):
                    findings.append(Finding(f"entry {info.filename[:120]!r}",
                                            "a nested archive or binary", "the archive"))
                if inner.startswith("code/") and inner.endswith(".py"):
                    findings += scan_source(_read_text(zf, info), inner)
                elif inner.endswith((".pkl", ".debug_pkl")):
                    with zf.open(info) as fh:
                        findings += scan_pickle(fh, inner)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError):
        raise InvalidArchiveError(
            "the upload is a damaged or truncated zip archive (an entry cannot be read)"
        ) from None
    if findings:
        raise refuse(findings)


def _read_text(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    with zf.open(info) as fh:
        data = fh.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        raise UnsafeArchiveError(
            f"the TorchScript source {info.filename[:120]!r} is over {MAX_SOURCE_BYTES} bytes"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeArchiveError(
            f"the TorchScript source {info.filename[:120]!r} is not UTF-8 text"
        ) from None


# graphs --------------------------------------------------------------------------------------
def _type_findings(values: Iterable[Any], where: str, findings: list[Finding]) -> None:
    for value in values:
        for qualified in _CLASS_IN_TYPE.findall(str(value.type())):
            problem = class_problem(qualified)
            if problem:
                findings.append(Finding(qualified, problem, where))


def _walk(block: Any, where: str, findings: list[Finding], depth: int = 0) -> None:
    if depth > 64:  # TorchScript nests blocks for control flow; this deep is not a real model
        findings.append(Finding("a graph", "nested too deeply to check", where))
        return
    _type_findings(block.inputs(), where, findings)
    for node in block.nodes():
        kind = node.kind()
        problem = op_problem(kind)
        if problem:
            findings.append(Finding(kind, problem, where))
        _type_findings(node.outputs(), where, findings)
        for sub in node.blocks():
            _walk(sub, where, findings, depth + 1)
        for attr in node.attributeNames():
            if node.kindOf(attr) == "g":
                _walk(node.g(attr), where, findings, depth + 1)


def check_graph(graph: Any, where: str) -> list[Finding]:
    """Refused ops and classes in one graph, its blocks and subgraphs (fork bodies)."""
    findings: list[Finding] = []
    _walk(graph, where, findings)
    return findings


def check_functions(functions: Iterable[Any]) -> list[Finding]:
    """Check every compiled function (``CompilationUnit.get_functions()``)."""
    findings: list[Finding] = []
    for fn in functions:
        findings += check_graph(fn.graph, f"the graph of {fn.qualified_name}")
    return findings


def check_module(module: Any) -> list[Finding]:
    """Check every method of a loaded module and its submodules, inlined, and their hooks."""
    findings: list[Finding] = []
    for qualname, sub in module.named_modules():
        owner = qualname or "the module"
        for method_name in sub._c._method_names():  # no public API lists a module's methods
            method = sub._c._get_method(method_name)
            where = f"{owner}.{method_name}" if qualname else method_name
            findings += check_graph(method.graph, f"the graph of {where}")
            findings += check_graph(method.inlined_graph, f"the inlined graph of {where}")
        for hook in list(sub._c._get_forward_hooks()) + list(sub._c._get_forward_pre_hooks()):
            findings += check_graph(hook.graph, f"the graph of hook {hook.name} of {owner}")
    return findings


def require_safe_module(module: Any) -> None:
    """Raise a 422 if a loaded module's graphs use anything the policy refuses."""
    findings = check_module(module)
    if findings:
        raise refuse(_unique(findings))


def _unique(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        if (f.what, f.where) not in seen:
            seen.add((f.what, f.where))
            out.append(f)
    return out
