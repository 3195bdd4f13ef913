"""name -> versions -> serving version; when versions appear and disappear.

Load the new version before it becomes visible; a failed load changes nothing. Removal
tombstones the version in the store first (so every server learns), then hides it and drains
its batcher. ``reconcile`` makes this server serve what the store says (versions other
servers committed or deleted, pins they set); ``app.serving.convergence`` decides when. How a
version is loaded and started is ``app.serving.loader``'s business.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from app.errors import ConflictError, ModelLoadError, NotFoundError, NotReadyError, redact_paths
from app.intake.operations import stage
from app.serving.batching import BatchPolicy
from app.serving.loader import Loader, QuarantineError
from app.serving.model_version import ModelVersion
from app.serving.quarantine import Quarantine
from app.serving.runtime import LoadedModel
from app.store import ARCHIVE_FILE, ModelStore, StoredVersion, StoreState
from app.store.files import sha256_of

log = logging.getLogger(__name__)

@dataclass
class ModelEntry:
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pinned: int | None = None  # the chosen default; None: the highest version serves
    pin_seq: int = 0  # the store's sequence number of the pin applied here

    @property
    def default(self) -> ModelVersion | None:
        if self.pinned is not None and self.pinned in self.versions:
            return self.versions[self.pinned]
        return self.versions[max(self.versions)] if self.versions else None


class Registry:
    """Every loaded model version, keyed by name and version."""

    def __init__(self, store: ModelStore, loader: Loader) -> None:
        self.store = store
        self.loader = loader
        self._entries: dict[str, ModelEntry] = {}
        self.loading = False
        self.load_failures: dict[str, str] = {}
        self._failed_at: dict[str, float] = {}
        self.on_miss: Callable[[str, int | None], Awaitable[bool]] | None = None
        """Asked before a 404: may the store know this model or version? (convergence)"""
        self.unloaded: set[str] = set()  # stored, but taken out of serving here (repository unload)
        self.quarantine = Quarantine(store)  # versions not loaded until an admin acts
        self._tasks: set[asyncio.Future] = set()

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
            held = self.quarantine.versions(name)
            if held:
                raise NotFoundError(
                    f"model {name!r} has no loaded version: version(s) {held} are quarantined "
                    f"(their loads failed, hung or killed their host twice): "
                    f"{self.quarantine.reason(name, held[-1])}; after a fix, "
                    f"POST /models/{name}/versions/{held[-1]}/retry, or delete them")
            raise NotFoundError(f"no model named {name!r}")
        if version is None:
            return entry.default  # type: ignore[return-value]
        found = entry.versions.get(version)
        if found is None:
            raise NotFoundError(
                f"model {name!r} has no version {version}; versions: {sorted(entry.versions)}"
            )
        return found

    async def resolve(self, name: str, version: int | None = None) -> ModelVersion:
        """``get``, but a model or version this server does not know yet is looked up in the
        store first (another server may have just committed it): read-your-writes anywhere."""
        try:
            return self.get(name, version)
        except NotFoundError:
            if self.on_miss is None or not await self.on_miss(name, version):
                raise
        return self.get(name, version)

    def default_version(self, name: str) -> int:
        """The version that serves requests naming no version."""
        return self.get(name).version

    def pinned(self, name: str) -> int | None:
        """The pinned default version of ``name``, if one is pinned."""
        self.get(name)
        return self._entries[name].pinned

    def versions(self, name: str) -> list[ModelVersion]:
        self.get(name)
        return [self._entries[name].versions[v] for v in sorted(self._entries[name].versions)]

    def all_versions(self) -> list[ModelVersion]:
        return [mv for e in self._entries.values() for mv in e.versions.values()]

    # start-up ------------------------------------------------------------------------------
    async def reconcile(self, state: StoreState) -> None:
        """Serve what ``state`` (a fresh read of the store) says: load versions committed
        elsewhere, retire tombstoned ones, apply newer pins. Failures stay on this server."""
        await self._load_new(state)
        for name, dead in state.tombstones.items():
            known = self._entries.get(name)
            gone = [v for v in dead if known is not None and v in known.versions]
            if gone:
                # A listing is not a snapshot: a version committed just before this deletion
                # may be missing from it. Read this model again, and load what is new first,
                # so requests for the default version never find none.
                await self._load_new(await asyncio.to_thread(self.store.state, name))
            for version in gone:
                await self._retire(name, version)
        for name in [n for n, e in self._entries.items() if not e.versions and not e.lock.locked()]:
            self._entries.pop(name, None)

    async def _load_new(self, state: StoreState) -> None:
        for name, versions in state.versions.items():
            if name in self.unloaded:  # taken out of serving here until loaded again
                continue
            entry = self._entry(name)
            marked = state.quarantined.get(name, {})
            for version, record in sorted(versions.items()):
                key = f"{name}/{version}"
                if version in marked:
                    self.quarantine.mark(key, marked[version])
                    self.load_failures[key] = f"quarantined: {marked[version]}"
                    continue
                self.quarantine.forget(key)  # lifted elsewhere (a retry on another server)
                if version not in entry.versions and self._may_try(key):
                    await self._activate_record(entry, name, version, record)
            seq, pinned = state.pins.get(name, (0, None))
            if seq > entry.pin_seq:
                entry.pin_seq, entry.pinned = seq, pinned

    def _may_try(self, key: str) -> bool:
        """A version that failed to load here is tried again at most once a minute."""
        return time.monotonic() - self._failed_at.get(key, -1e9) > 60

    async def _activate_record(self, entry: ModelEntry, name: str, version: int,
                               record: dict[str, Any]) -> None:
        key = f"{name}/{version}"
        async with entry.lock:
            if version in entry.versions:  # an upload here committed it meanwhile
                return
            try:
                stored = await asyncio.to_thread(self.store.read, name, version, record)
                model = await self.loader.load_stored(stored)
                await self._serve_loaded(stored, model)
            except QuarantineError as exc:
                await self._quarantine(name, version, exc.message)
                return
            except Exception as exc:
                self.load_failures[key] = redact_paths(str(exc))[:300]
                self._failed_at[key] = time.monotonic()
                log.error("could not load stored model %s: %s", key, exc)
                return
        self.load_failures.pop(key, None)
        self._failed_at.pop(key, None)

    def _release(self, mv: ModelVersion) -> None:
        """Close a retired version's model (its host) once its inference threads are done: a
        forward still running past the drain finishes for its requests (deadline + grace)."""
        if not mv.batcher.running:
            mv.model.close()
            return

        async def later() -> None:
            await asyncio.to_thread(mv.batcher.join)
            mv.model.close()

        task = asyncio.ensure_future(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_loaded(self, stored: StoredVersion, model: LoadedModel) -> None:
        try:
            learnt = await asyncio.to_thread(self.store.read_learnt, stored)
            self._show(await self.loader.serve(stored, model, learnt))
        except BaseException:
            model.close()
            raise

    # quarantine ----------------------------------------------------------------------------
    async def _quarantine(self, name: str, version: int, reason: str) -> None:
        reason = await self.quarantine.record(name, version, reason)
        self.load_failures[f"{name}/{version}"] = f"quarantined: {reason}"

    def _forget_failure(self, key: str) -> None:
        self.quarantine.forget(key)
        self.load_failures.pop(key, None)
        self._failed_at.pop(key, None)

    def host_gave_up(self, loop: asyncio.AbstractEventLoop, model: LoadedModel, reason: str) -> None:
        """A model's host could not load it again after restarts (any thread): quarantine and
        retire the version it served."""
        def settle() -> None:
            for mv in self.all_versions():
                if mv.model is model:
                    task = asyncio.ensure_future(self._give_up(mv.name, mv.version, reason))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(settle)

    async def _give_up(self, name: str, version: int, reason: str) -> None:
        await self._quarantine(name, version, reason)
        await self._retire(name, version)

    async def retry(self, name: str, version: int) -> ModelVersion:
        """Lift a version's quarantine (or a failed load) and load it now; a failure: 422."""
        record = await asyncio.to_thread(self.store.lookup, name, version)
        if record is None:
            raise NotFoundError(f"model {name!r} has no version {version}")
        key = f"{name}/{version}"
        entry = self._entry(name)
        if version in entry.versions:
            raise ConflictError(f"model {name!r} version {version} is serving; nothing to retry")
        await self.quarantine.lift(name, version)
        self._forget_failure(key)
        await self._activate_record(entry, name, version, record)
        if version not in entry.versions:
            raise ModelLoadError(self.load_failures.get(key, "the version could not be loaded"))
        return entry.versions[version]

    # the default version ------------------------------------------------------------------
    async def pin(self, name: str, version: int) -> ModelVersion:
        """Make ``version`` the default of ``name`` until unpinned (kept in the store)."""
        mv = await self.resolve(name, version)
        entry = self._entries[name]
        async with entry.lock:
            if version not in entry.versions:
                raise NotFoundError(f"model {name!r} has no version {version}")
            await self._write_pin(entry, name, version)
        return mv

    async def unpin(self, name: str) -> ModelVersion:
        """Return to "the highest version is the default"."""
        await self.resolve(name)
        entry = self._entries[name]
        async with entry.lock:
            await self._write_pin(entry, name, None)
        return self.get(name)

    async def _write_pin(self, entry: ModelEntry, name: str, version: int | None) -> None:
        seq = await asyncio.to_thread(self.store.write_pin, name, version)
        if seq > entry.pin_seq:
            entry.pin_seq, entry.pinned = seq, version

    async def rollback(self, name: str) -> ModelVersion:
        """Pin the highest version below the current default."""
        current = self.get(name).version
        older = [v for v in self._entries[name].versions if v < current]
        if not older:
            raise ConflictError(
                f"model {name!r} has no version older than its default {current} to roll back to"
            )
        return await self.pin(name, max(older))

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
            if version is not None and version in entry.versions:
                raise ConflictError(f"model {name!r} version {version} already exists")
            device_request = device or self.loader.default_device
            archive = staging / ARCHIVE_FILE
            model, io_spec = await self.loader.load_new(archive, device_request, extra_meta or {},
                                                        prepare, label=name)
            meta = {  # the store adds name, version (the next free one when None) and sha256
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
            stage("committing")  # in the event loop: a cancel can no longer slip in after this
            try:
                stored = await asyncio.to_thread(self.store.commit, staging, name, version, meta)
                served = self._show(await self.loader.serve(stored, model))
            except BaseException:
                model.close()
                raise
            stage("serving")
            return served

    def _show(self, mv: ModelVersion) -> ModelVersion:
        mv.learnt_sink = self.store.save_learnt
        self._entry(mv.name).versions[mv.version] = mv
        return mv

    async def remove_version(self, name: str, version: int, unpin: bool = False) -> None:
        """Tombstone a version in the store, then hide it and drain its requests here."""
        if f"{name}/{version}" in self.quarantine:  # stored, never served: nothing to drain
            await asyncio.to_thread(self.store.delete, name, version)
            self._forget_failure(f"{name}/{version}")
            return
        await self.resolve(name, version)
        entry = self._entries[name]
        async with entry.lock:
            if version == entry.pinned and not unpin:
                raise ConflictError(
                    f"version {version} is the pinned default of model {name!r}: pin another "
                    f"version or unpin it first (scriptserve unpin {name})"
                )
            if version not in entry.versions:
                raise NotFoundError(f"model {name!r} has no version {version}")
            await asyncio.to_thread(self.store.delete, name, version)
            if version == entry.pinned:
                await self._write_pin(entry, name, None)
        # versions other servers committed come in before this one goes (same as a sync)
        await self._load_new(await asyncio.to_thread(self.store.state, name))
        await self._retire(name, version)

    async def _retire(self, name: str, version: int) -> None:
        """Hide a version and drain its batcher (the store already says it is gone)."""
        entry = self._entries.get(name)
        if entry is None:
            return
        async with entry.lock:
            mv = entry.versions.pop(version, None)
            if mv is None:
                return
            await mv.batcher.stop(queued_deadlines=True)
            self._release(mv)
            if not entry.versions and entry.pinned is None:
                self._entries.pop(name, None)

    async def remove_model(self, name: str) -> list[int]:
        """Remove every version of ``name``."""
        entry = self._entries.get(name)
        held = self.quarantine.versions(name)
        for version in held:
            await self.remove_version(name, version)
        if held and (entry is None or not entry.versions):
            return held
        if name in self.unloaded and (entry is None or not entry.versions):
            removed = await asyncio.to_thread(self.store.versions, name)
            for version in removed:  # unloaded: nothing serving to drain
                await asyncio.to_thread(self.store.delete, name, version)
            self.unloaded.discard(name)
            return removed
        await self.resolve(name)
        removed = [mv.version for mv in self.versions(name)]
        for version in removed:
            await self.remove_version(name, version, unpin=True)
        return removed

    # model repository (Triton's load / unload) ---------------------------------------------
    def index(self) -> list[tuple[str, int, str, str]]:
        """Every stored version: (name, version, READY or UNAVAILABLE, reason)."""
        out = []
        state = self.store.state()
        for name in sorted(state.versions):
            entry = self._entries.get(name)
            for version in sorted(state.versions[name]):
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
            await asyncio.gather(*(mv.batcher.stop(queued_deadlines=True) for mv in versions))
            for mv in versions:
                self._release(mv)
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
                    await self._serve_loaded(stored, model)
                except QuarantineError as exc:
                    await self._quarantine(name, version, exc.message)
                    raise
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
    return sha256_of(path)


