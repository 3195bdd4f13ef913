"""The model store on disk: ``<root>/<name>/<version>/{model.torchscript,meta.json}``.

A version becomes visible only once complete: it is written into ``<root>/.staging/``,
fsynced, and renamed into place. Deletion renames into ``<root>/.trash/`` first. Both
folders are debris after a crash and are emptied at start-up. No torch here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import BadRequestError, ConflictError, NotFoundError

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ARCHIVE_FILE = "model.torchscript"
META_FILE = "meta.json"
LEARNT_FILE = "learnt.json"
"""The signature a version's requests showed (v2 metadata), rewritten as it widens."""
STAGING = ".staging"
TRASH = ".trash"


def validate_name(name: str) -> str:
    """Return ``name`` if it is a legal model name, else raise a 400."""
    if not NAME_PATTERN.match(name) or name in {".", ".."}:
        raise BadRequestError(
            f"invalid model name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return name


def fsync_path(path: Path) -> None:
    """Flush a file or directory entry to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StoredVersion:
    """One committed version on disk."""

    name: str
    version: int
    path: Path
    meta: dict[str, Any]

    @property
    def archive(self) -> Path:
        return self.path / ARCHIVE_FILE


class ModelStore:
    """Layout, atomic commit and listing of model versions."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def prepare(self) -> None:
        """Create the layout and remove debris left by a crash."""
        self.root.mkdir(parents=True, exist_ok=True)
        for debris in (STAGING, TRASH):
            folder = self.root / debris
            if folder.exists():
                for entry in folder.iterdir():
                    log.warning("removing unfinished store entry %s", entry.name)
                    shutil.rmtree(entry, ignore_errors=True)
            folder.mkdir(exist_ok=True)

    def new_staging_dir(self) -> Path:
        """A fresh private folder for an upload in progress."""
        path = self.root / STAGING / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def discard(self, staging: Path) -> None:
        """Remove an abandoned staging folder."""
        shutil.rmtree(staging, ignore_errors=True)

    def versions(self, name: str) -> list[int]:
        """Committed version numbers of ``name``, ascending."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = []
        for entry in folder.iterdir():
            if entry.name.isdigit() and (entry / META_FILE).is_file():
                found.append(int(entry.name))
        return sorted(found)

    def names(self) -> list[str]:
        """Names that have at least one committed version."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and NAME_PATTERN.match(entry.name) and self.versions(entry.name)
        )

    def read(self, name: str, version: int) -> StoredVersion:
        """Read one committed version's metadata."""
        path = self.root / name / str(version)
        try:
            meta = json.loads((path / META_FILE).read_text())
        except FileNotFoundError as exc:
            raise NotFoundError(f"model {name!r} has no version {version}") from exc
        return StoredVersion(name, version, path, meta)

    def all(self) -> list[StoredVersion]:
        """Every committed version, by name then version."""
        out = []
        for name in self.names():
            for version in self.versions(name):
                try:
                    out.append(self.read(name, version))
                except (OSError, ValueError) as exc:
                    log.error("skipping unreadable %s/%s: %s", name, version, exc)
        return out

    def commit(self, staging: Path, name: str, version: int, meta: dict[str, Any]) -> StoredVersion:
        """Write ``meta.json`` into ``staging`` and atomically publish it as ``name/version``."""
        meta_path = staging / META_FILE
        with open(meta_path, "w") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        for entry in staging.iterdir():
            if entry.is_file():
                fsync_path(entry)
        fsync_path(staging)
        parent = self.root / name
        parent.mkdir(exist_ok=True)
        target = parent / str(version)
        try:
            # rename() onto an existing empty directory would succeed; refuse it explicitly.
            if target.exists():
                raise FileExistsError(target)
            os.rename(staging, target)
        except FileExistsError as exc:
            raise ConflictError(f"model {name!r} version {version} already exists") from exc
        fsync_path(parent)
        fsync_path(self.root)
        return StoredVersion(name, version, target, meta)

    def save_learnt(self, stored: StoredVersion, doc: dict[str, Any]) -> None:
        """Replace a version's ``learnt.json`` atomically; a version deleted meanwhile is skipped."""
        tmp = stored.path / f".{LEARNT_FILE}.{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_text(json.dumps(doc, sort_keys=True))
            os.replace(tmp, stored.path / LEARNT_FILE)
        except FileNotFoundError:
            log.debug("%s/%s is gone; its learnt signature is not saved", stored.name, stored.version)

    def read_learnt(self, stored: StoredVersion) -> dict[str, Any] | None:
        """A version's ``learnt.json``, or None if missing or unreadable."""
        try:
            doc = json.loads((stored.path / LEARNT_FILE).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def delete(self, name: str, version: int) -> None:
        """Remove a committed version (rename away first, so it vanishes atomically)."""
        path = self.root / name / str(version)
        if not path.is_dir():
            raise NotFoundError(f"model {name!r} has no version {version}")
        trash = self.root / TRASH / f"{name}-{version}-{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)
        fsync_path(path.parent)
        shutil.rmtree(trash, ignore_errors=True)
        if not self.versions(name):
            shutil.rmtree(path.parent, ignore_errors=True)
