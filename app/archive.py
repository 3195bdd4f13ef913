"""Inspecting uploaded files before torch sees them: format detection and zip limits."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from app.errors import InvalidArchiveError

TORCHSCRIPT_HINT = (
    "expected a TorchScript archive as written by ScriptModule.save() / torch.jit.save() "
    "(e.g. torch.jit.script(model).save('model.torchscript'))"
)
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class ArchiveInfo:
    """What an uploaded zip turned out to be."""

    kind: str  # "torchscript" or "checkpoint"
    prefix: str
    entries: int
    uncompressed_bytes: int


def inspect_zip(path: Path) -> ArchiveInfo:
    """Classify a zip written by torch; raise a 400 for anything else."""
    if not zipfile.is_zipfile(path):
        raise InvalidArchiveError(f"the upload is not a zip archive: {TORCHSCRIPT_HINT}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidArchiveError(f"the upload is a damaged zip archive ({exc})") from None
    if len(infos) > MAX_ENTRIES:
        raise InvalidArchiveError(f"the archive has {len(infos)} entries (limit {MAX_ENTRIES})")
    names = [i.filename for i in infos]
    prefixes = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(prefixes) != 1:
        raise InvalidArchiveError(
            f"the archive does not have the single top-level folder torch writes: {TORCHSCRIPT_HINT}"
        )
    prefix = prefixes.pop()
    has = set(names).__contains__
    size = sum(i.file_size for i in infos)
    if not has(f"{prefix}/data.pkl"):
        raise InvalidArchiveError(f"the archive has no data.pkl: {TORCHSCRIPT_HINT}")
    code = any(n.startswith(f"{prefix}/code/") for n in names)
    if code and has(f"{prefix}/constants.pkl"):
        return ArchiveInfo("torchscript", prefix, len(infos), size)
    return ArchiveInfo("checkpoint", prefix, len(infos), size)


def require_torchscript(path: Path) -> ArchiveInfo:
    """Raise a 400 unless ``path`` is a TorchScript archive."""
    info = inspect_zip(path)
    if info.kind != "torchscript":
        raise InvalidArchiveError(
            "the upload is a torch.save() checkpoint (a state_dict or a pickled module), not a "
            f"TorchScript archive: {TORCHSCRIPT_HINT}"
        )
    return info
