"""The model store: the one source of truth that every server converges on.

Keys (on any backend, see ``app.store.backend``)::

    blobs/<sha256>                           archive bytes, immutable, verified on read
    models/<name>/versions/<v>.json          the version record (its metadata), written once
    models/<name>/tombstones/<v>.json        written once when the version is deleted
    models/<name>/pins/<seq>.json            {"version": v or null}; the highest seq holds
    models/<name>/quarantine/<v>-<seq>.json  {"quarantined": bool, "reason": ...}; the highest
                                             seq holds (a version that cannot be loaded)

Commit: the blob first, then the version record, created only if absent, so a version is
visible only once its bytes are complete; a crash at any point leaves at most an unreferenced
blob. Automatic numbering takes one more than the highest number ever used and retries when
another server took it; an explicit number that is taken is a 409. Numbers are never reused.
Deletion writes a tombstone; the blob goes later (``collect_garbage``). No torch here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import BadRequestError, ConflictError, NotFoundError
from app.store.backend import Backend
from app.store.files import FileBackend, sha256_of

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ARCHIVE_FILE = "model.torchscript"  # the archive's name inside a staging folder
_KEY = re.compile(r"^models/([^/]+)/(versions|tombstones|pins)/(\d+)\.json$")
_QUARANTINE = re.compile(r"^models/([^/]+)/quarantine/(\d+)-(\d+)\.json$")
_RETRIES = 20
_HOST = socket.gethostname().replace("-", "_")[:40]
_STAGING = re.compile(r"^(.+)-(\d+)-[0-9a-f]{12}$")


def _abandoned(entry: Path) -> bool:
    """A staging folder whose server process is gone (or unknown, or a day old)."""
    m = _STAGING.match(entry.name)
    try:
        if m is None or time.time() - entry.stat().st_mtime > 24 * 3600:
            return True
    except FileNotFoundError:
        return False
    if m[1] != _HOST:
        return False  # another machine's upload on a shared volume: its server cleans it
    try:
        os.kill(int(m[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(m[2]) == os.getpid()


def validate_name(name: str) -> str:
    """Return ``name`` if it is a legal model name, else raise a 400."""
    if not NAME_PATTERN.match(name) or name in {".", ".."}:
        raise BadRequestError(
            f"invalid model name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class StoredVersion:
    """One committed version: its record, and a local, verified copy of its archive."""

    name: str
    version: int
    meta: dict[str, Any]
    archive: Path

    @property
    def digest(self) -> str:
        return str(self.meta.get("sha256", ""))


@dataclass
class StoreState:
    """What the store says is served: live version records and pins, by model."""

    versions: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    pins: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    """name -> (the pin's sequence number, the pinned version or None)."""
    tombstones: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    quarantined: dict[str, dict[int, str]] = field(default_factory=dict)
    """name -> version -> why it is quarantined (not loaded until an admin retries it)."""


def _version_key(name: str, version: int) -> str:
    return f"models/{name}/versions/{version}.json"


def _tombstone_key(name: str, version: int) -> str:
    return f"models/{name}/tombstones/{version}.json"


class ModelStore:
    """Commit, list, delete and pin versions on a backend; cache immutable records."""

    def __init__(self, root: Path, backend: Backend | None = None) -> None:
        self.root = Path(root)  # local: the admin token file, staging
        self.backend: Backend = backend or FileBackend(self.root)
        self._records: dict[str, dict[str, Any]] = {}  # immutable once written: cache forever

    # layout ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the layout, remove debris of a crash, move an old-layout store over."""
        from app.store.legacy import migrate

        self.root.mkdir(parents=True, exist_ok=True)
        scratch = self.backend.scratch()
        scratch.mkdir(parents=True, exist_ok=True)
        for entry in scratch.iterdir():
            if _abandoned(entry):
                log.warning("removing unfinished upload %s", entry.name)
                shutil.rmtree(entry, ignore_errors=True)
        shutil.rmtree(self.root / ".trash", ignore_errors=True)  # the old layout's deletions
        migrate(self)

    def new_staging_dir(self) -> Path:
        """A fresh private folder for an upload in progress, named for its server process."""
        path = self.backend.scratch() / f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path

    def discard(self, staging: Path) -> None:
        """Remove an abandoned staging folder."""
        shutil.rmtree(staging, ignore_errors=True)

    # reading -----------------------------------------------------------------------------
    def _record(self, key: str) -> dict[str, Any] | None:
        cached = self._records.get(key)
        if cached is not None:
            return cached
        raw = self.backend.get(key)
        if raw is None:
            return None
        record = json.loads(raw)
        if not isinstance(record, dict):
            raise ValueError(f"store record {key} is not an object")
        self._records[key] = record
        return record

    def state(self, name: str | None = None) -> StoreState:
        """Every live version record and pin (one listing, then cached reads); of one model
        when ``name`` is given."""
        seen: dict[str, dict[str, dict[int, str]]] = {}
        marks: dict[tuple[str, int], tuple[int, str]] = {}
        for key in self.backend.keys(f"models/{name}/" if name else "models/"):
            m = _KEY.match(key)
            if m:
                seen.setdefault(m[1], {}).setdefault(m[2], {})[int(m[3])] = key
            elif q := _QUARANTINE.match(key):
                mark = (q[1], int(q[2]))
                if int(q[3]) > marks.get(mark, (0, ""))[0]:
                    marks[mark] = (int(q[3]), key)
        state = StoreState()
        for (model, version), (_, key) in marks.items():
            note = self._record(key) or {}
            if note.get("quarantined"):
                state.quarantined.setdefault(model, {})[version] = str(note.get("reason", ""))
        for name, kinds in seen.items():
            dead = set(kinds.get("tombstones", {}))
            live = {}
            for version, key in kinds.get("versions", {}).items():
                if version in dead:
                    continue
                try:
                    record = self._record(key)
                except ValueError as exc:
                    log.error("skipping unreadable %s: %s", key, exc)
                    continue
                if record is not None:
                    live[version] = record
            if live:
                state.versions[name] = live
                pins = kinds.get("pins", {})
                if pins:
                    state.pins[name] = (max(pins), self._pin_from(pins[max(pins)]))
            if dead:
                state.tombstones[name] = {
                    v: self._record(k) or {} for v, k in kinds["tombstones"].items()
                }
        return state

    def _pin_from(self, key: str) -> int | None:
        record = self._record(key) or {}
        version = record.get("version")
        return int(version) if isinstance(version, int) else None

    def names(self) -> list[str]:
        """Names that have at least one live version."""
        return sorted(self.state().versions)

    def versions(self, name: str) -> list[int]:
        """Live version numbers of ``name``, ascending."""
        return sorted(self.state().versions.get(name, {}))

    def lookup(self, name: str, version: int) -> dict[str, Any] | None:
        """One version's record read by its key (no listing), or None if absent or deleted."""
        if self.backend.get(_tombstone_key(name, version)) is not None:
            return None
        return self._record(_version_key(name, version))

    def read(self, name: str, version: int, record: dict[str, Any] | None = None) -> StoredVersion:
        """A committed version with a verified local copy of its archive."""
        record = record if record is not None else self.lookup(name, version)
        if record is None:
            raise NotFoundError(f"model {name!r} has no version {version}")
        archive = self.backend.blob_path(str(record["sha256"]))
        return StoredVersion(name, version, record, archive)

    def all(self) -> list[StoredVersion]:
        """Every live version, by name then version (archives fetched and verified)."""
        out = []
        for name, versions in sorted(self.state().versions.items()):
            for version, record in sorted(versions.items()):
                try:
                    out.append(self.read(name, version, record))
                except (OSError, ValueError, KeyError) as exc:
                    log.error("skipping unreadable %s/%s: %s", name, version, exc)
        return out

    # writing -----------------------------------------------------------------------------
    def commit(self, staging: Path, name: str, version: int | None,
               meta: dict[str, Any]) -> StoredVersion:
        """Publish ``staging/model.torchscript`` as a version of ``name`` (None: the next)."""
        archive = staging / ARCHIVE_FILE
        digest = meta.get("sha256") or sha256_of(archive)
        self.backend.put_blob(digest, archive)
        taken = 0  # a listing may be stale (S3, NFS): never try a number at or below one taken
        for _ in range(_RETRIES):
            number = version if version is not None else max(self._next_version(name), taken + 1)
            record = {**meta, "name": name, "version": number, "sha256": digest}
            data = json.dumps(record, indent=2, sort_keys=True).encode()
            if self.backend.create(_version_key(name, number), data):
                self._records[_version_key(name, number)] = record
                self.discard(staging)
                return StoredVersion(name, number, record, self.backend.blob_path(digest))
            if version is not None:
                gone = self.backend.get(_tombstone_key(name, version)) is not None
                raise ConflictError(
                    f"model {name!r} version {version} "
                    + ("was deleted; version numbers are not reused" if gone else "already exists")
                )
            taken = number
            log.info("version %s of %s was taken by another server; trying the next", number, name)
        raise ConflictError(f"could not find a free version number for {name!r}; try again")

    def _next_version(self, name: str) -> int:
        used = [int(m[3]) for key in self.backend.keys(f"models/{name}/")
                if (m := _KEY.match(key)) and m[2] == "versions"]
        return max(used, default=0) + 1

    def save_learnt(self, stored: StoredVersion, doc: dict[str, Any]) -> None:
        """Keep what a version's requests showed (v2 metadata): ``models/<name>/learnt/<v>.json``,
        rewritten as it widens; a hint, not part of what is served, so it may be overwritten."""
        key = f"models/{stored.name}/learnt/{stored.version}.json"
        self.backend.put(key, json.dumps(doc, sort_keys=True).encode())

    def read_learnt(self, stored: StoredVersion) -> dict[str, Any] | None:
        """A version's learnt signature, or None if missing or unreadable."""
        try:
            raw = self.backend.get(f"models/{stored.name}/learnt/{stored.version}.json")
            doc = json.loads(raw) if raw is not None else None
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def delete(self, name: str, version: int) -> None:
        """Tombstone a live version (its blob is collected later)."""
        if self.lookup(name, version) is None:
            raise NotFoundError(f"model {name!r} has no version {version}")
        data = json.dumps({"version": version, "deleted_at": time.time()}).encode()
        self.backend.create(_tombstone_key(name, version), data)  # False: someone else did

    def read_pin(self, name: str) -> int | None:
        """The pinned default version of ``name``, or None (the highest serves)."""
        return self.state().pins.get(name, (0, None))[1]

    def write_pin(self, name: str, version: int | None) -> int:
        """Pin ``version`` as the default of ``name`` (None unpins); the newest pin holds.
        Returns the pin's sequence number."""
        for _ in range(_RETRIES):
            taken = [int(m[3]) for key in self.backend.keys(f"models/{name}/pins/")
                     if (m := _KEY.match(key))]
            seq = max(taken, default=0) + 1
            data = json.dumps({"version": version, "at": time.time()}).encode()
            if self.backend.create(f"models/{name}/pins/{seq:012d}.json", data):
                return seq
        raise ConflictError(f"could not pin {name!r}: too many concurrent changes; try again")

    def write_quarantine(self, name: str, version: int, reason: str | None) -> int:
        """Quarantine a version (``reason``), or lift its quarantine (None); the newest record
        holds. Returns the record's sequence number."""
        for _ in range(_RETRIES):
            taken = [int(m[3]) for key in self.backend.keys(f"models/{name}/quarantine/")
                     if (m := _QUARANTINE.match(key)) and int(m[2]) == version]
            seq = max(taken, default=0) + 1
            data = json.dumps({"quarantined": reason is not None, "reason": reason,
                               "at": time.time(), "host": _HOST}).encode()
            if self.backend.create(f"models/{name}/quarantine/{version}-{seq:012d}.json", data):
                return seq
        raise ConflictError(f"could not record the quarantine of {name!r} version {version}; try again")

    def collect_garbage(self, grace_s: float) -> list[str]:
        """Remove blobs that no live version uses and whose last user was deleted more than
        ``grace_s`` ago; returns their digests. Blobs of unknown age are kept."""
        state = self.state()
        live = {str(r.get("sha256")) for vs in state.versions.values() for r in vs.values()}
        old: set[str] = set()
        recent: set[str] = set()
        now = time.time()
        for name, dead in state.tombstones.items():
            for version, tomb in dead.items():
                record = self._record(_version_key(name, version)) or {}
                aged = now - float(tomb.get("deleted_at", now)) > grace_s
                (old if aged else recent).add(str(record.get("sha256")))
        collected = sorted(old - live - recent)
        for digest in collected:
            self.backend.delete_blob(digest)
        return collected
