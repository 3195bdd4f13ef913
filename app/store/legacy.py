"""Stores written before the commit protocol: ``<root>/<name>/<version>/{model.torchscript,
meta.json}`` (and ``<root>/<name>/default.json`` for a pin). ``migrate`` moves them into the
current layout at start-up with nothing lost: each archive becomes a blob (hard-linked, not
copied), each ``meta.json`` a version record, then the old folder goes. Safe to run on several
servers at once: records are written once, and a folder another server moved is skipped."""

from __future__ import annotations

import json
import logging
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from app.store.files import sha256_of

if TYPE_CHECKING:
    from app.store.store import ModelStore

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
OLD_ARCHIVE, OLD_META, OLD_PIN = "model.torchscript", "meta.json", "default.json"


def migrate(store: ModelStore) -> int:
    """Move every old-layout version into the store; returns how many moved."""
    root, moved = store.root, 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)):
        old = [v for v in folder.iterdir()
               if v.name.isdigit() and (v / OLD_META).is_file() and (v / OLD_ARCHIVE).is_file()]
        for version_dir in sorted(old, key=lambda p: int(p.name)):
            version = int(version_dir.name)
            meta = json.loads((version_dir / OLD_META).read_text())
            meta["sha256"] = sha256_of(version_dir / OLD_ARCHIVE)  # the bytes decide, not the file
            store.backend.put_blob(meta["sha256"], version_dir / OLD_ARCHIVE)
            data = json.dumps({**meta, "name": folder.name, "version": version},
                              indent=2, sort_keys=True).encode()
            store.backend.create(f"models/{folder.name}/versions/{version}.json", data)
            _remove(version_dir, store)
            moved += 1
            log.warning("moved %s version %d to the store's current layout", folder.name, version)
        pin = folder / OLD_PIN
        if old and pin.is_file():
            store.write_pin(folder.name, json.loads(pin.read_text()).get("version"))
            pin.unlink(missing_ok=True)
        if old and not any(folder.iterdir()):
            folder.rmdir()
    return moved


def _remove(version_dir: Path, store: ModelStore) -> None:
    trash = store.root / ".trash" / f"{version_dir.parent.name}-{version_dir.name}-{uuid.uuid4().hex[:8]}"
    trash.parent.mkdir(exist_ok=True)
    try:
        version_dir.rename(trash)
    except FileNotFoundError:  # another server moved it first
        return
    shutil.rmtree(trash, ignore_errors=True)
