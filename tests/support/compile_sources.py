"""Model sources and weights for compile tests, written at test time (no committed binaries)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from app.examples import Classification

SOURCES = {
    # the tutorial's models, as a user would upload them
    "classification": """
        import torch
        from torch import nn


        class Classification(nn.Module):
            def __init__(self):
                super().__init__()
                self.linear1 = nn.Linear(320, 160)
                self.linear2 = nn.Linear(160, 2)

            def forward(self, x):
                return torch.sigmoid(self.linear2(self.linear1(x)))
    """,
    "input_confirm": """
        import torch
        from torch import nn


        class InputConfirm(nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    return x
                return -x
    """,
    # torch.jit.script rejects comprehension ifs; a trace of it is exact
    "unscriptable": """
        import torch
        from torch import nn


        class Unscriptable(nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = nn.Linear(4, 2)

            def forward(self, x):
                odd = [i for i in range(4) if i % 2]
                return self.linear(x) * len(odd)
    """,
    "factory": """
        from torch import nn


        def make_mlp(width=8, depth=2):
            layers = [nn.Linear(4, width), nn.ReLU()]
            for _ in range(depth - 1):
                layers += [nn.Linear(width, width), nn.ReLU()]
            return nn.Sequential(*layers, nn.Linear(width, 3))
    """,
    "syntax_error": """
        from torch import nn

        class Broken(nn.Module):
            def forward(self, x)
                return x
    """,
    "raises_in_forward": """
        import torch
        from torch import nn


        class Picky(nn.Module):
            def forward(self, x):
                return torch.matmul(x, torch.ones(3, 3))
    """,
    # hostile or broken sources: each must fail alone, cleanly
    "infinite_loop": """
        from torch import nn


        class Spin(nn.Module):
            def __init__(self):
                super().__init__()
                while True:
                    pass
    """,
    "huge_allocation": """
        import torch
        from torch import nn


        class Hog(nn.Module):
            def __init__(self):
                super().__init__()
                self.buffer = torch.ones(25 * 1024**3)  # 100 GB of float32
    """,
    "segfault": """
        import ctypes

        from torch import nn


        class Crash(nn.Module):
            def __init__(self):
                super().__init__()
                ctypes.string_at(0)
    """,
    "token_search": """
        import os
        from torch import nn


        def search():
            found = {k: v for k, v in os.environ.items()
                     if "TOKEN" in k.upper() or "SECRET" in k.upper() or k.startswith("SCRIPTSERVE")}
            with open("/proc/self/environ", "rb") as fh:
                raw = fh.read().decode(errors="replace")
            found.update({"/proc/self/environ": e for e in raw.split("\\0") if "SCRIPTSERVE" in e})
            return found, sorted(os.environ)


        class Snoop(nn.Module):
            def __init__(self):
                super().__init__()
                found, names = search()
                raise RuntimeError(f"token search found {found!r}; environment names {names}")
    """,
}


def write_source(folder: Path, name: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(SOURCES[name]).lstrip())
    return path


def classification_weights(folder: Path, seed: int = 1, fmt: str = "pt") -> tuple[Path, torch.nn.Module]:
    """A state_dict of the tutorial's classifier (torch.save or safetensors) and its eager module."""
    torch.manual_seed(seed)
    model = Classification().eval()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = folder / f"classification-{seed}.safetensors"
        save_file(model.state_dict(), str(path))
    else:
        path = folder / f"classification-{seed}.pt"
        torch.save(model.state_dict(), path)
    return path, model


def pickled_module(folder: Path) -> Path:
    """``torch.save(model)``: the whole module, pickled."""
    torch.manual_seed(2)
    path = folder / "whole-model.pt"
    torch.save(Classification().eval(), path)
    return path
