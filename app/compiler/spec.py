"""What to compile: the JSON-ready spec shared by the server, the compile process and the CLI."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

from app.wire.dtypes import BY_NAME, NAMES

Method = Literal["auto", "script", "trace", "export"]
METHODS: tuple[str, ...] = ("auto", "script", "trace", "export")
FORMATS: tuple[str, ...] = ("torchscript", "exported_program", "aoti")
MAX_EXAMPLE_ELEMENTS = 50_000_000
MAX_EXAMPLE_INPUTS = 32
_CLI_EXAMPLE = re.compile(r"^(\d+(?:x\d+)*)?(?::([a-z0-9]+))?$")


class CompileFailure(Exception):
    """Compilation failed for a reason the user can act on (422 on the server).

    ``reason`` is a short machine word (``trace_diverged``, ``script_failed``, ...).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SpecError(ValueError):
    """A compile option is malformed (400 on the server, a usage error in the CLI)."""


@dataclass(frozen=True, kw_only=True)
class CompileSpec:
    """Everything the compile process needs; file names are relative to its working dir.

    One subclass per form of eager model: ``ArchitectureSpec``, ``SourceSpec``,
    ``PickledModuleSpec``.
    """

    FORM: ClassVar[str] = ""
    method: str = "auto"
    format: str = "torchscript"  # what is stored: method=export gives exported_program; aoti
    examples: list[dict[str, Any]] = field(default_factory=list)
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    weights_file: str | None = None
    weights_format: str | None = None  # state_dict, safetensors or pickle
    weights_name: str | None = None  # the name the user gave the weights, for messages
    optimize: bool = False
    accept_divergent_trace: bool = False

    @property
    def form(self) -> str:
        return self.FORM

    @property
    def source_path(self) -> str | None:
        """The uploaded source file, for the forms that have one."""
        return None

    def describe(self) -> str:
        """The model as the user named it."""
        raise NotImplementedError

    def to_payload(self) -> dict[str, Any]:
        return {"form": self.FORM, **asdict(self)}

    @staticmethod
    def from_payload(payload: dict[str, Any]) -> CompileSpec:
        forms: dict[str, type[CompileSpec]] = {
            c.FORM: c for c in (ArchitectureSpec, SourceSpec, PickledModuleSpec)}
        cls = forms[payload["form"]]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


@dataclass(frozen=True, kw_only=True)
class ArchitectureSpec(CompileSpec):
    """A known architecture (import path ``pkg.module:Name``) with a state_dict."""

    FORM: ClassVar[str] = "architecture"
    architecture: str

    def describe(self) -> str:
        return self.architecture


@dataclass(frozen=True, kw_only=True)
class SourceSpec(CompileSpec):
    """The model's own source file, its entry point, and optional weights."""

    FORM: ClassVar[str] = "source"
    source_file: str  # where the uploaded .py lies in the working dir
    source_name: str  # the name the user gave it, for messages
    entrypoint: str

    @property
    def source_path(self) -> str | None:
        return self.source_file

    def describe(self) -> str:
        return f"{self.source_name}:{self.entrypoint}"


@dataclass(frozen=True, kw_only=True)
class PickledModuleSpec(CompileSpec):
    """A whole pickled module (trusted uploads only)."""

    FORM: ClassVar[str] = "pickled_module"
    weights_file: str

    def describe(self) -> str:
        return f"pickled module {self.weights_name or ''}".strip()


def parse_method(raw: str) -> str:
    method = raw.strip().lower() or "auto"
    if method not in METHODS:
        raise SpecError(f"method must be one of {list(METHODS)}, got {raw[:40]!r}")
    return method


def parse_format(raw: str, method: str) -> str:
    """The stored format an eager upload asks for, consistent with its method."""
    value = raw.strip().lower()
    if value and value not in FORMATS:
        raise SpecError(f"format must be one of {list(FORMATS)}, got {raw[:40]!r}")
    if value == "aoti" or value == "exported_program":
        if method in ("script", "trace"):
            raise SpecError(f"format={value} is compiled from torch.export; use method=export (or "
                            "leave method unset), not method=" + method)
        return value
    if value == "torchscript" and method == "export":
        raise SpecError("method=export stores an ExportedProgram (.pt2), not TorchScript; "
                        "drop format or use method=script / trace")
    return "exported_program" if method == "export" else "torchscript"


def parse_bool(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value in {"", "0", "false", "no", "off"}:
        return False
    if value in {"1", "true", "yes", "on"}:
        return True
    raise SpecError(f"{name} must be true or false, got {raw[:40]!r}")


def parse_init_kwargs(raw: str) -> dict[str, Any]:
    """A JSON object of keyword arguments for the class or factory."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SpecError(f"init_kwargs is not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and k.isidentifier() for k in value):
        raise SpecError('init_kwargs must be a JSON object of keyword arguments, e.g. {"width": 64}')
    return value


def parse_examples(raw: str | Any) -> list[dict[str, Any]]:
    """Normalize ``example_inputs`` into one dict per positional input.

    Accepted: a list with one entry per input, each ``{"shape": [1, 320], "dtype": "float32"}``
    (values generated), ``{"data": [...], "dtype": ...}`` (given values), or a nested list of
    numbers (given values; floats become float32, integers int64). A single dict stands for a
    one-input model.
    """
    if isinstance(raw, str):
        if not raw.strip():
            return []
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SpecError(f"example_inputs is not valid JSON: {exc.msg} (column {exc.colno})") from None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise SpecError(
            'example_inputs must be a list with one entry per input, e.g. '
            '[{"shape": [1, 320], "dtype": "float32"}] or [[[0.5, -1.0]]]'
        )
    if len(raw) > MAX_EXAMPLE_INPUTS:
        raise SpecError(f"example_inputs has {len(raw)} inputs (limit {MAX_EXAMPLE_INPUTS})")
    return [_example(item, i) for i, item in enumerate(raw)]


def _example(item: Any, index: int) -> dict[str, Any]:
    where = f"example_inputs[{index}]"
    if isinstance(item, (list, int, float, bool)):
        item = {"data": item}
    if not isinstance(item, dict):
        raise SpecError(f"{where} must be an object with shape and dtype, or a nested list of numbers")
    unknown = set(item) - {"shape", "dtype", "data", "low", "high"}
    if unknown:
        raise SpecError(f"{where} has unknown keys {sorted(unknown)}; use shape, dtype, data, low, high")
    out: dict[str, Any] = {}
    dtype = item.get("dtype")
    if dtype is not None:
        if dtype not in BY_NAME:
            raise SpecError(f"{where}.dtype {str(dtype)[:20]!r} is not one of {list(NAMES)}")
        out["dtype"] = dtype
    if "data" in item:
        if not _is_numeric_nest(item["data"]):
            raise SpecError(f"{where}.data must be a number or a nested list of numbers")
        out["data"] = item["data"]
        if "shape" in item:
            out["shape"] = _shape(item["shape"], where)
        return out
    if "shape" not in item:
        raise SpecError(f"{where} needs a shape (e.g. [1, 320]) or data")
    out["shape"] = _shape(item["shape"], where)
    out.setdefault("dtype", "float32")
    for bound in ("low", "high"):
        if bound in item:
            if not isinstance(item[bound], (int, float)) or isinstance(item[bound], bool):
                raise SpecError(f"{where}.{bound} must be a number")
            out[bound] = item[bound]
    return out


def _shape(raw: Any, where: str) -> list[int]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                            for d in raw):
        raise SpecError(f"{where}.shape must be a list of non-negative integers, e.g. [1, 320]")
    if len(raw) > 8 or math.prod(raw) > MAX_EXAMPLE_ELEMENTS:
        raise SpecError(f"{where}.shape {raw} is too large for an example")
    return list(raw)


def _is_numeric_nest(value: Any, depth: int = 0) -> bool:
    if isinstance(value, (int, float, bool)):
        return True
    return isinstance(value, list) and depth < 8 and all(_is_numeric_nest(v, depth + 1) for v in value)


def parse_cli_example(text: str) -> dict[str, Any]:
    """``1x320:float32`` -> ``{"shape": [1, 320], "dtype": "float32"}`` (dtype optional)."""
    match = _CLI_EXAMPLE.match(text.strip())
    if not match or not match.group(1):
        raise SpecError(f"--example {text!r}: expected SHAPE[:DTYPE], e.g. 1x320:float32")
    item: dict[str, Any] = {"shape": [int(d) for d in match.group(1).split("x")]}
    if match.group(2):
        item["dtype"] = match.group(2)
    return _example(item, 0)


def describe_examples(examples: list[dict[str, Any]]) -> list[str]:
    """Short human descriptions, e.g. ``1x320 float32``."""
    out = []
    for ex in examples:
        dtype = ex.get("dtype", "given")
        if "shape" in ex and "data" not in ex:
            out.append(f"{'x'.join(map(str, ex['shape'])) or 'scalar'} {dtype}")
        else:
            out.append(f"given values ({dtype})")
    return out
