"""name -> versions -> loaded model + batcher; load, swap and unload semantics.

Load the new version before it becomes visible; a failed load changes nothing. Removal
hides a version first, then drains its batcher, then deletes it from the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from app.errors import ConflictError, NotFoundError, NotReadyError, redact_paths
from app.intake.gate import ArchiveGate
from app.serving.batching import Batcher, BatchObserver, BatchPolicy
from app.serving.runtime import LoadedModel, resolve_device
from app.serving.warmup import example_inputs, warm_up
from app.store import ARCHIVE_FILE, ModelStore, StoredVersion
from app.wire.shapes import LearntSignature

log = logging.getLogger(__name__)

ObserverFactory = Callable[[str, int], BatchObserver | None]
LoadObserver = Callable[[float, BaseException | None], None]
"""Told the seconds each archive load took, and its error if it failed."""


@dataclass
class ModelVersion:
    """A committed, loaded, serving version."""

    stored: StoredVersion
    model: LoadedModel
    batcher: Batcher
    # Tensor names, dtypes and shapes seen in successful requests (v2 model metadata).
    learnt: LearntSignature = field(default_factory=LearntSignature)

    @property
    def name(self) -> str:
        return self.stored.name

    @property
    def version(self) -> int:
        return self.stored.version

    def info(self) -> dict[str, Any]:
        meta = self.stored.meta
        policy = self.batcher.policy
        state = self.batcher.state
        return {
            "version": self.version,
            "device": str(self.model.device),
            "signature": self.model.signature.as_dict(),
            "archive_bytes": meta.get("archive_bytes"),
            "parameter_bytes": self.model.parameter_bytes(),
            "sha256": meta.get("sha256"),
            "created_at": meta.get("created_at"),
            "source": meta.get("source", "archive"),
            "batching": {
                "max_batch_size": policy.max_batch_size,
                "max_batch_delay_ms": policy.max_batch_delay_ms,
                "max_queue_size": policy.max_queue_size,
                "threads": policy.threads,
                "mode": policy.mode,
                "enabled": state.enabled,
                "reason": state.reason,
            },
            "queue_depth": self.batcher.queue_depth,
            "in_flight": self.batcher.in_flight,
            **({"compile": meta["compile"]} if "compile" in meta else {}),
            **({"warnings": meta["warnings"]} if meta.get("warnings") else {}),
        }


@dataclass
class ModelEntry:
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def default(self) -> ModelVersion | None:
        return self.versions[max(self.versions)] if self.versions else None


class Registry:
    """Every loaded model version, keyed by name and version."""

    def __init__(
        self,
        store: ModelStore,
        default_device: str,
        default_policy: BatchPolicy,
        observer_factory: ObserverFactory | None = None,
        load_observer: LoadObserver | None = None,
        gate: ArchiveGate | None = None,
    ) -> None:
        self.store = store
        self.gate = gate  # archive screening + trial load (app.intake.gate); None trusts every archive
        self.default_device = default_device
        self.default_policy = default_policy
        self.observer_factory = observer_factory
        self.load_observer = load_observer
        self._entries: dict[str, ModelEntry] = {}
        self.loading = False
        self.load_failures: dict[str, str] = {}

    # reading -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.versions)

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """The requested version (default: the highest), or a 404 / 503."""
        entry = self._entries.get(name)
        if entry is None or not entry.versions:
            if self.loading and name in self.store.names():
                raise NotReadyError(f"model {name!r} is still loading")
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
            device_request = device or self.default_device
            resolved = resolve_device(device_request, self.default_device)
            archive = staging / ARCHIVE_FILE
            if self.gate is not None:
                await asyncio.to_thread(self.gate.admit, archive)
            model = await self._load(archive, resolved)
            if self.gate is not None:
                await asyncio.to_thread(self.gate.check_loaded, model.module)
            template = example_inputs(extra_meta or {})
            if template is not None:
                await asyncio.to_thread(warm_up, model, template)
            if prepare is not None:
                await asyncio.to_thread(prepare, model)
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
            }
            stored = await asyncio.to_thread(self.store.commit, staging, name, version, meta)
            return await self._serve(stored, model)

    async def _activate(self, stored: StoredVersion) -> ModelVersion:
        resolved = resolve_device(stored.meta.get("device"), self.default_device)
        if self.gate is not None:  # the rules may have tightened since it was stored
            await asyncio.to_thread(self.gate.recheck, stored.archive)
        model = await self._load(stored.archive, resolved)
        if self.gate is not None:
            await asyncio.to_thread(self.gate.check_loaded, model.module)
        entry = self._entry(stored.name)
        async with entry.lock:
            return await self._serve(stored, model)

    async def _load(self, archive: Path, device: str) -> LoadedModel:
        start = time.monotonic()
        try:
            model = await asyncio.to_thread(LoadedModel.load, archive, device)
        except Exception as exc:
            if self.load_observer is not None:
                self.load_observer(time.monotonic() - start, exc)
            raise
        if self.load_observer is not None:
            self.load_observer(time.monotonic() - start, None)
        return model

    async def _serve(self, stored: StoredVersion, model: LoadedModel) -> ModelVersion:
        saved = stored.meta.get("batching", {})
        base = self.default_policy
        policy = BatchPolicy(
            max_batch_size=saved.get("max_batch_size") or base.max_batch_size,
            max_batch_delay_ms=saved.get("max_batch_delay_ms", base.max_batch_delay_ms),
            max_queue_size=base.max_queue_size,
            threads=saved.get("threads") or saved.get("workers") or base.threads,
            mode=saved.get("mode", base.mode),
            max_output_bytes=base.max_output_bytes,
        )
        observer = self.observer_factory(stored.name, stored.version) if self.observer_factory else None
        batcher = Batcher(model, policy, f"{stored.name}:{stored.version}", observer)
        template = example_inputs(stored.meta)
        if template is not None and batcher.state.enabled is None:
            # Known example inputs: decide batch safety now rather than on the first request.
            await asyncio.to_thread(batcher.decide_batching, template)
        batcher.start()
        mv = ModelVersion(stored, model, batcher)
        self._entry(stored.name).versions[stored.version] = mv
        log.info("serving %s version %d on %s", stored.name, stored.version, model.device)
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
        removed = [mv.version for mv in self.versions(name)]
        for version in removed:
            await self.remove_version(name, version)
        return removed

    async def close(self) -> None:
        """Drain and stop every batcher (shutdown)."""
        await asyncio.gather(*(mv.batcher.stop() for mv in self.all_versions()))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


