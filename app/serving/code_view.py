"""What TorchScript will run: ``.code``, ``.graph`` and the inlined graph of a module."""

from __future__ import annotations

from typing import Any, Literal

import torch

View = Literal["code", "graph", "inlined"]


def _render(target: Any, view: View) -> str | None:
    try:
        if view == "code":
            return target.code
        if view == "graph":
            return str(target.graph)
        return str(target.inlined_graph)
    except (AttributeError, RuntimeError):
        return None  # e.g. containers such as ModuleList have no forward


def module_code(module: torch.jit.ScriptModule, view: View) -> dict[str, Any]:
    """``forward``, every other method, and each submodule's forward, in the chosen view."""
    methods: dict[str, str] = {}
    for name in module._c._method_names():  # no public API lists a ScriptModule's methods
        if name == "forward":
            continue
        text = _render(getattr(module, name), view)
        if text is not None:
            methods[name] = text
    submodules: dict[str, str] = {}
    if view != "inlined":
        for qualname, sub in module.named_modules():
            if qualname:
                text = _render(sub, view)
                if text is not None:
                    submodules[qualname] = text
    return {"view": view, "forward": _render(module, view), "methods": methods,
            "submodules": submodules}


def as_text(doc: dict[str, Any]) -> str:
    """One plain-text document of a ``module_code`` result."""
    parts = [f"# forward ({doc['view']})\n{doc['forward']}"]
    parts += [f"# method {name}\n{text}" for name, text in doc["methods"].items()]
    parts += [f"# submodule {name}\n{text}" for name, text in doc["submodules"].items()]
    return "\n\n".join(p.rstrip() for p in parts) + "\n"
