"""What a ``.pt2`` archive may contain: screening ExportedPrograms and AOTInductor packages.

``torch.export.save`` writes a zip of JSON (the graph in ``models/<name>.json``, payload
configs), raw tensor bytes, and one pickle (``data/sample_inputs/<name>.pt``, a nested
``torch.save`` file). ``torch.export.load`` would unpickle more than that: weights and
constants flagged ``use_pickle`` with ``weights_only=False``, "opaque" constants with plain
``pickle.loads``, TorchBind objects, and it falls back to ``weights_only=False`` for the sample
inputs. And the graph's node targets are strings that the deserializer resolves with
``getattr`` from ``torch``, ``_operator`` or ``math``: ``torch.serialization.os.system`` would
resolve. So before torch sees one:

- every node target (and operator argument) must be ``torch.ops.NS.op.overload`` allowed by the
  TorchScript op policy (``app.intake.screening.op_problem``), one of a few higher-order ops
  (``cond``, ``while_loop``), or a listed symbolic-shape helper (``_operator.add``, ...);
- weights and constants must be raw tensor bytes (no ``use_pickle``, no custom or opaque
  objects), named plainly inside the archive;
- the sample-inputs pickle may only name what ``torch.load(weights_only=True)`` builds.

ScriptServe then loads the program itself (``app.serving.exported``) with ``weights_only=True``
and checks the loaded graph against the same policy.

An AOTInductor package holds a native shared library. It runs as machine code in the process
that loads it, so no screen can prove it harmless. What is checked: the library is an ELF
object in the package's model folder, and its dynamic imports include no process, network,
file or dynamic-loading functions and no proxy executor (which calls custom operators); the
ops it calls through AOTInductor's C shim (``aoti_torch_<device>_<op>``) are checked against
the op policy. A library can still make system calls directly; see docs/security.md.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.errors import InvalidArchiveError, UnsafeArchiveError
from app.intake.archive import PT2_AOTI, PT2_MODELS, PT2_SAMPLE_INPUTS, ArchiveInfo
from app.intake.screening import Finding, op_problem, scan_pickle

MAX_JSON_BYTES = 256 * 1024**2
MAX_NESTED_PICKLE_BYTES = 64 * 1024**2
# Higher-order operators whose subgraphs are screened like the main graph.
ALLOWED_HIGHER_ORDER = frozenset({"cond", "while_loop"})
# What the serializer writes for symbolic-shape arithmetic (torch/_export/serde/serialize.py).
ALLOWED_BUILTINS = frozenset({
    "_operator.getitem", "_operator.add", "_operator.sub", "_operator.mul", "_operator.floordiv",
    "_operator.truediv", "_operator.mod", "_operator.pow", "_operator.neg", "_operator.pos",
    "_operator.eq", "_operator.ne", "_operator.lt", "_operator.le", "_operator.gt", "_operator.ge",
    "_operator.and_", "_operator.or_", "_operator.not_", "_operator.abs",
    "math.ceil", "math.floor", "math.trunc", "math.sqrt",
    "torch.sym_int", "torch.sym_float", "torch.sym_max", "torch.sym_min", "torch.sym_not",
    "torch.sym_ite", "torch.sym_sqrt", "torch.sym_sum", "torch._sym_sqrt",
})
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_TENSOR_CONSTANT_PREFIX = "tensor_"
_ELF_MAGIC = b"\x7fELF"
# Dynamic imports of an AOTInductor library that no generated model needs.
DENIED_IMPORTS = {
    **dict.fromkeys(("system", "popen", "execve", "execv", "execvp", "execvpe", "execl", "execlp",
                     "execle", "fexecve", "fork", "vfork", "clone", "clone3", "posix_spawn",
                     "posix_spawnp", "ptrace", "kill"), "starts or controls processes"),
    **dict.fromkeys(("socket", "connect", "bind", "listen", "accept", "accept4", "sendto",
                     "recvfrom", "getaddrinfo", "gethostbyname"), "uses the network"),
    **dict.fromkeys(("open", "open64", "openat", "openat64", "creat", "fopen", "fopen64",
                     "unlink", "unlinkat", "rename", "remove", "chmod", "truncate"),
                    "opens or changes files"),
    **dict.fromkeys(("dlopen", "dlmopen", "dlsym", "syscall", "mprotect", "prctl"),
                    "loads code or makes raw system calls"),
    "aoti_torch_proxy_executor_call_function": "calls custom operators through the proxy executor",
}
_SHIM_OP = re.compile(r"aoti_torch_(?:cpu|cuda|xpu|mps)_(\w+?)(?:_out)?$")


def screen_pt2(path: Path, info: ArchiveInfo, allow_aoti: bool = True) -> None:
    """Screen a ``.pt2`` archive's contents; raise a 422 naming what is refused."""
    if info.kind == "aoti" and not allow_aoti:
        raise UnsafeArchiveError(
            "AOTInductor packages contain native code and are switched off on this server "
            "(SCRIPTSERVE_ALLOW_AOTI_UPLOADS); upload the ExportedProgram (torch.export.save) instead")
    findings: list[Finding] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for entry in zf.infolist():
                if entry.is_dir():
                    continue
                inner = entry.filename[len(info.prefix) + 1:]
                findings += _screen_entry(zf, entry, inner, info.kind)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError):
        raise InvalidArchiveError(
            "the upload is a damaged or truncated zip archive (an entry cannot be read)") from None
    if findings:
        raise refuse_pt2(findings)


def refuse_pt2(findings: list[Finding]) -> UnsafeArchiveError:
    shown = "; ".join(str(f) for f in findings[:5])
    more = f"; and {len(findings) - 5} more" if len(findings) > 5 else ""
    return UnsafeArchiveError(
        f"the .pt2 archive uses {shown}{more}. Exported programs may only call aten, prim and "
        "quantized operators without file, network or process side effects (and torch.cond / "
        "while_loop), and carry weights as raw tensors (see docs/security.md)")


def _screen_entry(zf: zipfile.ZipFile, entry: zipfile.ZipInfo, inner: str, kind: str) -> list[Finding]:
    if inner.startswith(PT2_MODELS) and inner.endswith(".json"):
        return program_findings(_read_json(zf, entry), inner)
    if inner.endswith("_config.json"):  # weights / constants payload configs
        return _payload_findings(_read_json(zf, entry), inner)
    if inner.startswith("data/weights/") and inner.endswith(".pt"):
        return [Finding(inner, "legacy pickled weights (re-save with torch.export.save from torch "
                        ">= 2.7, which writes raw tensors)", "the archive")]
    if inner.startswith(PT2_SAMPLE_INPUTS):
        return _nested_pickle_findings(zf, entry, inner)
    if kind == "aoti" and inner.startswith(PT2_AOTI) and inner.endswith(".so"):
        return library_findings(zf.read(entry), inner)
    if inner.startswith("data/"):  # raw tensor bytes: any first bytes are legitimate
        return []
    with zf.open(entry) as fh:
        head = fh.read(4)
    if head == _ELF_MAGIC or head.startswith(b"PK"):
        return [Finding(f"entry {inner[:120]!r}", "a nested archive or binary", "the archive")]
    return []


def _read_json(zf: zipfile.ZipFile, entry: zipfile.ZipInfo) -> Any:
    with zf.open(entry) as fh:
        data = fh.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise UnsafeArchiveError(f"the .pt2 entry {entry.filename[:120]!r} is over {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise InvalidArchiveError(f"the .pt2 entry {entry.filename[:120]!r} is not valid JSON") from None


# graphs ----------------------------------------------------------------------------------
def target_problem(target: str) -> str | None:
    """Why a serialized node target (``torch.ops.aten.relu.default``, ...) is refused, or None."""
    if target in ALLOWED_BUILTINS:
        return None
    parts = target.split(".")
    if len(parts) in (4, 5) and parts[:2] == ["torch", "ops"] and all(p.isidentifier() for p in parts):
        namespace, name = parts[2], parts[3]
        if namespace == "higher_order":
            ok = name in ALLOWED_HIGHER_ORDER and len(parts) == 4
            return None if ok else f"higher-order operator {name!r} outside the allowlist"
        return op_problem(f"{namespace}::{name}")
    if target.startswith("#"):
        return "an extension operator"
    return "a Python callable, not an operator"


def _strings_at(node: Any, keys: frozenset[str], depth: int = 0) -> Iterator[tuple[str, str]]:
    """(key, value) for every string stored under one of ``keys``, anywhere in a JSON tree."""
    if depth > 200:
        raise UnsafeArchiveError("the exported program's JSON is nested too deeply to screen")
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield key, value
            elif key != "metadata":  # stack traces and module paths: strings never resolved
                yield from _strings_at(value, keys, depth + 1)
    elif isinstance(node, list):
        for value in node:
            yield from _strings_at(value, keys, depth + 1)


def program_findings(program: Any, where: str) -> list[Finding]:
    """Refused node targets and operator arguments in a serialized ExportedProgram."""
    findings = []
    for key, value in _strings_at(program, frozenset({"target", "as_operator"})):
        problem = target_problem(value)
        if problem:
            findings.append(Finding(value[:200], problem, f"{where} ({key})"))
    return findings


# payloads --------------------------------------------------------------------------------
def _payload_findings(config: Any, where: str) -> list[Finding]:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        return [Finding(where, "not a payload config", "the archive")]
    findings = []
    for fqn, meta in entries.items():
        name = str(fqn)[:120]
        if not isinstance(meta, dict):
            findings.append(Finding(name, "a malformed payload entry", where))
            continue
        path_name = meta.get("path_name")
        if not isinstance(path_name, str) or not _PLAIN_NAME.fullmatch(path_name) or path_name in {".", ".."}:
            findings.append(Finding(name, "a payload path that is not a plain file name", where))
        elif "constants" in where and not path_name.startswith(_TENSOR_CONSTANT_PREFIX):
            findings.append(Finding(name, "a custom or opaque object constant (unpickled as code)", where))
        if meta.get("use_pickle"):
            findings.append(Finding(name, "a pickled tensor (loaded with weights_only=False)", where))
    return findings


def _nested_pickle_findings(zf: zipfile.ZipFile, entry: zipfile.ZipInfo, inner: str) -> list[Finding]:
    if entry.file_size > MAX_NESTED_PICKLE_BYTES:
        return [Finding(inner, f"sample inputs over {MAX_NESTED_PICKLE_BYTES} bytes", "the archive")]
    data = zf.read(entry)
    if not data:
        return []
    try:
        nested = zipfile.ZipFile(io.BytesIO(data))
        pickles = [i for i in nested.infolist() if i.filename.endswith(".pkl")]
        declared = sum(i.file_size for i in nested.infolist())
        if len(nested.infolist()) > 10_000 or declared > 4 * MAX_NESTED_PICKLE_BYTES:
            return [Finding(inner, "a nested archive over its limits", "the archive")]
        findings = []
        for info in pickles:
            with nested.open(info) as fh:
                findings += scan_pickle(fh, f"{inner}/{info.filename}")
        return findings
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return [Finding(inner, "sample inputs that are not a torch.save archive", "the archive")]


# AOTInductor libraries -------------------------------------------------------------------
def library_findings(data: bytes, where: str) -> list[Finding]:
    """Refused dynamic imports of an AOTInductor shared library."""
    try:
        imports = elf_imports(data)
    except ValueError as exc:
        return [Finding(where, f"not a shared library torch could have written ({exc})", "the archive")]
    findings = []
    for symbol in sorted(imports):
        base = symbol.split("@", 1)[0]
        if base in DENIED_IMPORTS:
            findings.append(Finding(f"import {base}", DENIED_IMPORTS[base], where))
            continue
        match = _SHIM_OP.match(base)
        if match:
            problem = op_problem(f"aten::{match.group(1)}")
            if problem:
                findings.append(Finding(f"import {base}", problem, where))
    return findings


def elf_imports(data: bytes) -> set[str]:
    """Undefined dynamic symbols of a little-endian ELF64 shared object."""
    if len(data) < 64 or not data.startswith(_ELF_MAGIC):
        raise ValueError("no ELF header")
    if data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian 64-bit ELF object")
    e_type = struct.unpack_from("<H", data, 16)[0]
    if e_type != 3:  # ET_DYN
        raise ValueError("not a shared object")
    shoff, = struct.unpack_from("<Q", data, 40)
    shentsize, shnum = struct.unpack_from("<HH", data, 58)
    if shentsize != 64 or shoff + shnum * 64 > len(data):
        raise ValueError("section headers out of bounds")
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * 64) for i in range(shnum)]
    symbols: set[str] = set()
    for sh in sections:
        if sh[1] != 11:  # SHT_DYNSYM
            continue
        offset, size, link, entsize = sh[4], sh[5], sh[6], sh[9]
        if link >= shnum or entsize != 24 or offset + size > len(data):
            raise ValueError("a malformed dynamic symbol table")
        str_off, str_size = sections[link][4], sections[link][5]
        if str_off + str_size > len(data):
            raise ValueError("a malformed dynamic string table")
        for pos in range(offset, offset + size, 24):
            st_name, _info, _other, st_shndx = struct.unpack_from("<IBBH", data, pos)
            if st_shndx != 0 or st_name == 0:
                continue
            end = data.find(b"\0", str_off + st_name, str_off + str_size)
            if end < 0:
                raise ValueError("a symbol name runs past its table")
            symbols.add(data[str_off + st_name:end].decode("ascii", "replace"))
    return symbols
