"""name -> versions -> serving version; when versions appear and disappear.

Load the new version before it becomes visible; a failed load changes nothing. Removal
hides a version first, then drains its batcher, then deletes it from the store. How a
version is loaded and started is ``app.serving.loader``'s business.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from app.errors import ConflictError, NotFoundError, NotReadyError, redact_paths
from app.serving.batching import BatchPolicy
from app.serving.loader import Loader
from app.serving.model_version import ModelVersion
from app.serving.runtime import LoadedModel
from app.store import ARCHIVE_FILE, ModelStore, StoredVersion

log = logging.getLogger(__name__)

@dataclass
class ModelEntry:
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def default(self) -> ModelVersion | None:
        return self.versions[max(self.versions)] if self.versions else None


class Registry:
    """Every loaded model version, keyed by name and version."""

    def __init__(self, store: ModelStore, loader: Loader) -> None:
        self.store = store
        self.loader = loader
        self._entries: dict[str, ModelEntry] = {}
        self.loading = False
        self.load_failures: dict[str, str] = {}
        self.unloaded: set[str] = set()  # stored, but taken out of serving (repository unload)

    # reading -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.versions)

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """The requested version (default: the highest), or a 404 / 503."""
        entry = self._entries.get(name)
        if entry is None or not entry.versions:
            if self.loading and name in self.store.names():
                raise NotReadyError(f"model {name!r} is still loading")
            if name in self.unloaded:
                raise NotFoundError(
                    f"model {name!r} is unloaded; load it with POST /v2/repository/models/{name}/load"
                )
            raise NotFoundError(f"no model named {name!r}")
        if version is None:
            return entry.default  # type: ignore[return-value]
        found = entry.versions.get(version)
        if found is None:
            raise NotFoundError(
                f"model {name!r} has no version {version}; versions: {sorted(entry.versions)}"
            )
        return found

    def versions(self, name: str) -> list[ModelVersion]:
        self.get(name)
        return [self._entries[name].versions[v] for v in sorted(self._entries[name].versions)]

    def all_versions(self) -> list[ModelVersion]:
        return [mv for e in self._entries.values() for mv in e.versions.values()]

    # start-up ------------------------------------------------------------------------------
    async def load_store(self) -> None:
        """Load every committed version found in the store."""
        self.loading = True
        try:
            for stored in await asyncio.to_thread(self.store.all):
                key = f"{stored.name}/{stored.version}"
                try:
                    await self._activate(stored)
                except Exception as exc:
                    self.load_failures[key] = redact_paths(str(exc))[:300]
                    log.error("could not load stored model %s: %s", key, exc)
        finally:
            self.loading = False

    # changes -------------------------------------------------------------------------------
    def _entry(self, name: str) -> ModelEntry:
        return self._entries.setdefault(name, ModelEntry())

    async def add(
        self,
        name: str,
        staging: Path,
        version: int | None,
        device: str | None,
        policy: BatchPolicy,
        extra_meta: dict[str, Any] | None = None,
        prepare: Callable[[LoadedModel], None] | None = None,
    ) -> ModelVersion:
        """Load the archive in ``staging``, commit it as a new version, and serve it."""
        entry = self._entry(name)
        async with entry.lock:
            existing = await asyncio.to_thread(self.store.versions, name)
            if version is None:
                version = (max(existing) if existing else 0) + 1
            if version in existing or version in entry.versions:
                raise ConflictError(f"model {name!r} version {version} already exists")
            device_request = device or self.loader.default_device
            archive = staging / ARCHIVE_FILE
            model, io_spec = await self.loader.load_new(archive, device_request, extra_meta or {}, prepare)
            meta = {
                "name": name,
                "version": version,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "archive_bytes": archive.stat().st_size,
                "sha256": await asyncio.to_thread(_sha256, archive),
                "device": device_request,
                "signature": model.signature.as_dict(),
                "batching": {
                    "max_batch_size": policy.max_batch_size,
                    "max_batch_delay_ms": policy.max_batch_delay_ms,
                    "threads": policy.threads,
                    "mode": policy.mode,
                },
                **(extra_meta or {}),
                **({"io_spec": io_spec} if io_spec else {}),
            }
            stored = await asyncio.to_thread(self.store.commit, staging, name, version, meta)
            return self._show(await self.loader.serve(stored, model))

    async def _activate(self, stored: StoredVersion) -> ModelVersion:
        model = await self.loader.load_stored(stored)
        learnt = await asyncio.to_thread(self.store.read_learnt, stored)
        entry = self._entry(stored.name)
        async with entry.lock:
            return self._show(await self.loader.serve(stored, model, learnt))

    def _show(self, mv: ModelVersion) -> ModelVersion:
        mv.learnt_sink = self.store.save_learnt
        self._entry(mv.name).versions[mv.version] = mv
        return mv

    async def remove_version(self, name: str, version: int) -> None:
        """Hide a version, drain its requests, unload it and delete it from the store."""
        entry = self._entries.get(name)
        if entry is None or version not in entry.versions:
            raise NotFoundError(f"model {name!r} has no version {version}")
        async with entry.lock:
            mv = entry.versions.pop(version, None)
            if mv is None:
                raise NotFoundError(f"model {name!r} has no version {version}")
            await mv.batcher.stop()
            await asyncio.to_thread(self.store.delete, name, version)
            if not entry.versions:
                self._entries.pop(name, None)

    async def remove_model(self, name: str) -> list[int]:
        """Remove every version of ``name``."""
        entry = self._entries.get(name)
        if name in self.unloaded and (entry is None or not entry.versions):
            removed = await asyncio.to_thread(self.store.versions, name)
            for version in removed:  # unloaded: nothing serving to drain
                await asyncio.to_thread(self.store.delete, name, version)
            self.unloaded.discard(name)
            return removed
        removed = [mv.version for mv in self.versions(name)]
        for version in removed:
            await self.remove_version(name, version)
        return removed

    # model repository (Triton's load / unload) ---------------------------------------------
    def index(self) -> list[tuple[str, int, str, str]]:
        """Every stored version: (name, version, READY or UNAVAILABLE, reason)."""
        out = []
        for name in self.store.names():
            entry = self._entries.get(name)
            for version in self.store.versions(name):
                if entry is not None and version in entry.versions:
                    out.append((name, version, "READY", ""))
                elif name in self.unloaded:
                    out.append((name, version, "UNAVAILABLE", "unloaded"))
                else:
                    reason = self.load_failures.get(f"{name}/{version}", "not loaded")
                    out.append((name, version, "UNAVAILABLE", reason))
        return out

    async def unload(self, name: str) -> list[int]:
        """Stop serving every version of ``name`` (drained first); the store keeps them."""
        if name not in self._entries and name not in self.store.names():
            raise NotFoundError(f"no model named {name!r}")
        entry = self._entry(name)
        async with entry.lock:
            self.unloaded.add(name)
            removed = sorted(entry.versions)
            versions = [entry.versions.pop(v) for v in removed]
            await asyncio.gather(*(mv.batcher.stop() for mv in versions))
            await asyncio.gather(*(mv.flush_learnt() for mv in versions), return_exceptions=True)
        return removed

    async def load(self, name: str) -> list[int]:
        """Serve every stored version of ``name`` that is not serving (a failure: 422, the rest kept)."""
        stored_versions = await asyncio.to_thread(self.store.versions, name)
        if not stored_versions:
            raise NotFoundError(f"no model named {name!r} in the store")
        entry = self._entry(name)
        loaded = []
        async with entry.lock:  # a concurrent load or unload of this name waits
            for version in stored_versions:
                if version in entry.versions:
                    continue
                stored = await asyncio.to_thread(self.store.read, name, version)
                try:
                    model = await self.loader.load_stored(stored)
                    learnt = await asyncio.to_thread(self.store.read_learnt, stored)
                    self._show(await self.loader.serve(stored, model, learnt))
                except Exception as exc:
                    self.load_failures[f"{name}/{version}"] = redact_paths(str(exc))[:300]
                    raise
                self.load_failures.pop(f"{name}/{version}", None)
                loaded.append(version)
            self.unloaded.discard(name)
        return loaded

    async def close(self) -> None:
        """Drain and stop every batcher (shutdown)."""
        await asyncio.gather(*(mv.batcher.stop() for mv in self.all_versions()))
        await asyncio.gather(*(mv.flush_learnt() for mv in self.all_versions()), return_exceptions=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


