""".pt2 archives built at test time: the tutorial's classifier exported, and hostile edits of it.

The hostile archives start from a real ``torch.export.save`` archive and rewrite one entry
inside the zip (a node target, a payload config, the sample-inputs pickle), so everything
else is exactly what torch writes.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.export import Dim

from app.examples import Classification

ROWS = 320


def classifier(seed: int = 0) -> Classification:
    torch.manual_seed(seed)
    return Classification().eval()


def export_classifier(path: Path, dynamic: bool = True, max_rows: int | None = 1024, seed: int = 0) -> Path:
    """The tutorial's Classification as a torch.export.save archive (batch Dim when dynamic)."""
    example = (torch.rand(2, ROWS),)
    shapes = ({0: Dim("batch", min=1, max=max_rows)},) if dynamic else None
    program = torch.export.export(classifier(seed), example, dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def rewrite(source: Path, out: Path, edits: dict[str, Callable[[bytes], bytes]]) -> Path:
    """Copy a zip, passing each entry whose name ends with a key of ``edits`` through it."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, fn in edits.items():
                if info.filename.endswith(suffix):
                    data = fn(data)
            zout.writestr(info.filename, data)
    return out


def replace_text(old: str, new: str) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        assert old.encode() in data, f"{old!r} not in the entry"
        return data.replace(old.encode(), new.encode())
    return edit


class _RunsCommand:
    """Pickles to ``os.system(command)``: what a hostile pickle calls when unpickled."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        import os

        return os.system, (self.command,)


def pickle_calling_system(command: str) -> Callable[[bytes], bytes]:
    """Replace a nested torch.save archive's data.pkl with one that calls ``os.system``."""
    def edit(data: bytes) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                body = zin.read(info)
                if info.filename.endswith("data.pkl"):
                    body = pickle.dumps(_RunsCommand(command), protocol=2)
                zout.writestr(info.filename, body)
        return buf.getvalue()
    return edit


def mark_pickled(data: bytes) -> bytes:
    """A weights config that claims its first tensor is pickled (torch would unpickle it)."""
    config = json.loads(data)
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    return json.dumps(config).encode()
