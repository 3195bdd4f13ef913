"""Building the eager model in the compile process: architecture, source, or trusted pickle."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.compiler.forms import LoadedWeights, load_weights
from app.compiler.report import explain
from app.compiler.spec import (
    ArchitectureSpec,
    CompileFailure,
    CompileSpec,
    PickledModuleSpec,
    SourceSpec,
)
from app.errors import is_out_of_memory

SOURCE_MODULE = "user_model"


def eager_model(spec: CompileSpec, workdir: Path) -> tuple[nn.Module, dict[str, Any] | None]:
    """The eager module in eval mode with its weights, and a summary of those weights."""
    user_files = {str(workdir / spec.source_path)} if spec.source_path else set()
    weights: LoadedWeights | nn.Module | None = None
    if spec.weights_file:
        weights = load_weights(workdir / spec.weights_file, spec.weights_format or "state_dict")
    if isinstance(spec, PickledModuleSpec):
        if not isinstance(weights, nn.Module):
            raise CompileFailure(
                "bad_weights",
                "the trusted pickle does not hold an nn.Module; upload a state_dict with "
                "'architecture' or 'source' instead",
            )
        model = weights
        summary = {"format": "pickled module (trusted)", "tensors": len(model.state_dict())}
    else:
        if isinstance(spec, SourceSpec):
            factory = _from_source(workdir / spec.source_file, spec.entrypoint, user_files)
        elif isinstance(spec, ArchitectureSpec):
            factory = _from_import_path(spec.architecture)
        else:
            raise TypeError(f"unknown compile form {spec.form!r}")
        model = _construct(factory, spec.init_kwargs, user_files)
        summary = None
        if isinstance(weights, nn.Module):
            raise CompileFailure(
                "bad_weights",
                "the weights file holds a whole module, not a state_dict; save "
                "model.state_dict() instead",
            )
        if isinstance(weights, LoadedWeights):
            summary = _load_into(model, weights, spec.weights_format or "state_dict")
    return model.eval(), summary


def _from_import_path(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except Exception as exc:
        raise CompileFailure(
            "bad_architecture", f"could not import architecture {path!r}: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(target):
        raise CompileFailure("bad_architecture", f"architecture {path!r} is not a class or function")
    return target


def _from_source(path: Path, entrypoint: str, user_files: set[str]) -> Callable[..., Any]:
    """Import the uploaded source (this runs its top level) and find the entrypoint."""
    loader_spec = importlib.util.spec_from_file_location(SOURCE_MODULE, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    # TorchScript finds a class's source through sys.modules[cls.__module__]
    sys.modules[SOURCE_MODULE] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as exc:
        raise _user_failure(exc, "importing the source failed", user_files) from None
    target = getattr(module, entrypoint, None)
    if target is None or not callable(target):
        found = sorted(n for n, v in vars(module).items()
                       if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == SOURCE_MODULE)
        raise CompileFailure(
            "bad_entrypoint",
            f"the source has no class or function {entrypoint!r}; nn.Module classes in it: {found}",
        )
    return target


def _construct(factory: Callable[..., Any], kwargs: dict[str, Any], user_files: set[str]) -> nn.Module:
    name = getattr(factory, "__name__", "the entrypoint")
    try:
        model = factory(**kwargs)
    except BaseException as exc:
        raise _user_failure(exc, f"constructing {name}({_kwargs_text(kwargs)}) failed", user_files) from None
    if not isinstance(model, nn.Module):
        raise CompileFailure(
            "bad_entrypoint", f"{name}(...) returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _user_failure(exc: BaseException, what: str, user_files: set[str]) -> CompileFailure:
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return CompileFailure("source_error", f"{what}: the code called {type(exc).__name__}")
    reason = "memory_limit" if is_out_of_memory(exc) else "source_error"
    return CompileFailure(reason, explain(exc, what, user_files))


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())[:200]


def _load_into(model: nn.Module, weights: LoadedWeights, fmt: str) -> dict[str, Any]:
    try:
        model.load_state_dict(weights.state_dict, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CompileFailure(
            "weights_mismatch",
            f"the weights do not fit {type(model).__name__}: {str(exc).strip()[:1200]}",
        ) from None
    count = sum(t.numel() for t in weights.state_dict.values())
    summary: dict[str, Any] = {"format": fmt, "tensors": len(weights.state_dict), "elements": count}
    if weights.notes:
        summary["notes"] = weights.notes
    return summary


def run_user_forward(model: nn.Module, args: tuple[torch.Tensor, ...], what: str,
                     user_files: set[str]) -> Any:
    """Call the eager model; failures name the user's source line."""
    try:
        with torch.no_grad():
            return model(*args)
    except BaseException as exc:
        raise _user_failure(exc, what, user_files) from None
