"""Which eager form was uploaded, and reading weights without running uploaded code.

A ``torch.save`` file is a pickle; unpickling can run arbitrary code. So the server decides
what a weights file is by reading the pickle's opcodes with ``pickletools`` (never
unpickling it): a state_dict references only tensor-rebuilding functions, a pickled module
references its classes (``torch.nn.modules.linear Linear``, ``__main__ Net``). Weights load
in the compile process with ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import io
import json
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.compiler.spec import CompileFailure, SpecError

BUILTIN_ARCHITECTURES = {
    "Classification": "app.examples:Classification",
    "InputConfirm": "app.examples:InputConfirm",
}
BUILTIN_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "app.examples:Classification": [{"shape": [1, 320], "dtype": "float32"}],
    "app.examples:InputConfirm": [{"shape": [1, 8], "dtype": "float32"}],
}
MAX_PICKLE_SCAN_BYTES = 256 * 1024**2
STATE_DICT_HINT = (
    "save the weights instead: torch.save(model.state_dict(), 'weights.pt') (or safetensors), "
    "then upload them as 'weights' with 'architecture' or with the model's 'source'"
)
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "set"), ("__builtin__", "set"),
    ("builtins", "frozenset"), ("__builtin__", "frozenset"),
    ("_codecs", "encode"),
    ("torch", "device"), ("torch", "Size"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.serialization", "_get_layout"),
    ("torch.nn.parameter", "Parameter"),
}
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights upload is: ``state_dict``, ``safetensors``, or ``pickle`` (needs trust)."""

    format: str
    unsafe_globals: tuple[str, ...] = ()
    is_module: bool = False

    def refusal(self) -> str:
        """Why this file is not loaded unless pickled modules are trusted."""
        names = ", ".join(self.unsafe_globals[:5])
        what = "a whole pickled module (torch.save(model))" if self.is_module else "a pickled Python object"
        return (
            f"the weights file is {what}: it references {names}. Unpickling it would execute "
            f"arbitrary code, so ScriptServe refuses it; {STATE_DICT_HINT}"
        )


def inspect_weights(path: Path) -> WeightsInfo:
    """Classify a weights file by its bytes alone; raise SpecError for anything unreadable."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if _is_safetensors(path, head):
        return WeightsInfo("safetensors")
    if zipfile.is_zipfile(path):
        globals_ = _zip_pickle_globals(path)
    elif head[:1] == b"\x80":  # a pickle protocol marker: torch.save's legacy format
        globals_ = _legacy_pickle_globals(path)
    else:
        raise SpecError(
            "the weights file is neither a torch.save() file nor a .safetensors file; "
            "save it with torch.save(model.state_dict(), 'weights.pt')"
        )
    unsafe = tuple(sorted({g for g in globals_ if not _is_safe(g)}))
    if not unsafe:
        return WeightsInfo("state_dict")
    # state_dicts hold plain tensors; a pickled module holds its classes and Parameters
    is_module = any(g.startswith("torch.nn.modules.") or g.startswith("torch._utils._rebuild_parameter")
                    for g in globals_)
    return WeightsInfo("pickle", unsafe, is_module)


def _is_safetensors(path: Path, head: bytes) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if not 2 <= n <= min(100 * 1024**2, path.stat().st_size - 8) or head[8:9] != b"{":
        return False
    with open(path, "rb") as fh:
        fh.seek(8)
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError):
            return False
    return isinstance(header, dict)


def _zip_pickle_globals(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            pickles = [i for i in zf.infolist() if i.filename.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise SpecError("the weights file is a zip archive but not one written by torch.save()")
            if any(n.filename.split("/", 2)[1:2] == ["code"] for n in zf.infolist()):
                raise SpecError(
                    "the weights file is a TorchScript archive: upload it as form field 'file' instead"
                )
            if pickles[0].file_size > MAX_PICKLE_SCAN_BYTES:
                raise SpecError("the weights file's pickle is too large to be a state_dict")
            data = zf.read(pickles[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise SpecError(f"the weights file is a damaged zip archive ({exc})") from None
    return _pickle_globals(io.BytesIO(data), count=1)


def _legacy_pickle_globals(path: Path) -> list[str]:
    # Legacy torch.save: magic number, protocol, sys info, then the object (4 pickles).
    with open(path, "rb") as fh:
        return _pickle_globals(fh, count=4)


def _pickle_globals(stream: Any, count: int) -> list[str]:
    """``module.name`` of every global the pickle(s) reference, read from opcodes only."""
    found: list[str] = []
    try:
        for _ in range(count):
            mark = stream.tell()
            if not stream.read(1):  # a plain pickle holds one object, torch's legacy format four
                break
            stream.seek(mark)
            strings: list[str] = []  # recent string constants, for STACK_GLOBAL
            memo: dict[int, Any] = {}
            for op, arg, _pos in pickletools.genops(stream):
                if op.name == "GLOBAL":
                    module, _, name = str(arg).partition(" ")
                    found.append(f"{module}.{name}")
                elif op.name in {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}:
                    strings.append(str(arg))
                elif op.name in {"BINPUT", "LONG_BINPUT", "PUT"} and strings:
                    memo[int(str(arg))] = strings[-1]
                elif op.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in {"BINGET", "LONG_BINGET", "GET"} and int(str(arg)) in memo:
                    strings.append(memo[int(str(arg))])
                elif op.name == "STACK_GLOBAL":
                    found.append(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown>.<unknown>")
                elif op.name in {"INST", "OBJ"}:
                    found.append(str(arg).replace(" ", ".") if arg else "<unknown>.<object>")
    except (ValueError, EOFError, struct.error) as exc:
        raise SpecError(f"the weights file is not a readable torch.save() file ({exc})") from None
    return found


def _is_safe(qualified: str) -> bool:
    module, _, name = qualified.rpartition(".")
    if (module, name) in _SAFE_GLOBALS:
        return True
    if module == "torch" and (name.endswith("Storage") or name in _DTYPE_NAMES):
        return True
    return module == "torch._utils" and name.startswith("_rebuild_")


_DTYPE_NAMES = {
    "float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool",
    "half", "float", "double", "long", "int", "short", "complex64", "complex128",
}


def resolve_architecture(name: str, configured: list[str]) -> str:
    """The import path for an ``architecture`` form value (a short name or a listed path)."""
    name = name.strip()
    available = {**BUILTIN_ARCHITECTURES}
    for path in configured:
        available.setdefault(path.rpartition(":")[2].rpartition(".")[2], path)
    if name in available:
        return available[name]
    if name in configured or name in BUILTIN_ARCHITECTURES.values():
        return name
    raise SpecError(
        f"unknown architecture {name[:80]!r}; available: {sorted(available)} "
        "(operators add more with SCRIPTSERVE_ARCHITECTURES)"
    )


# ---- in the compile process only ----------------------------------------------------------
@dataclass
class LoadedWeights:
    state_dict: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def load_weights(path: Path, fmt: str) -> LoadedWeights | Any:
    """Read weights: safetensors, ``torch.load(weights_only=True)``, or (trusted) a full pickle.

    A trusted pickle may hold a whole module; it is returned as is.
    """
    import torch

    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            return LoadedWeights(dict(load_file(str(path), device="cpu")))
        except Exception as exc:
            raise CompileFailure("bad_weights", f"could not read the safetensors file: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=fmt != "pickle")
    except Exception as exc:
        first = str(exc).strip().splitlines()[:2]
        raise CompileFailure("bad_weights", "could not load the weights: " + " ".join(first)[:600]) from None
    if isinstance(obj, torch.nn.Module):
        return obj
    return _as_state_dict(obj)


def _as_state_dict(obj: Any) -> LoadedWeights:
    import torch

    notes = []
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                notes.append(f"used the checkpoint's {key!r} entry as the state_dict")
                obj = inner
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CompileFailure(
            "bad_weights",
            "the weights file does not hold a state_dict (a mapping of names to tensors); "
            + STATE_DICT_HINT,
        )
    keys = list(obj)
    if keys and all(k.startswith("module.") for k in keys):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        notes.append("removed the 'module.' prefix that DataParallel adds")
    return LoadedWeights(dict(obj), notes)
