"""How an archive becomes a serving version: gate, load on a device, check, warm up, batch.

The registry decides *when* (upload, start-up, deletion) and keeps the map; the loader owns
*how* a version is loaded and started, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.errors import ModelLoadError
from app.hosting.hosted import HostedModel, HostPool
from app.intake.gate import ArchiveGate
from app.intake.operations import stage
from app.intake.signature import check_declared
from app.serving.batching import Batcher, BatchObserver, BatchPolicy
from app.serving.model_version import ModelVersion, declared_dtypes
from app.serving.runtime import LoadedModel, load_model, resolve_device
from app.serving.warmup import example_inputs, warm_up
from app.store import StoredVersion
from app.wire.shapes import describe

log = logging.getLogger(__name__)

ObserverFactory = Callable[[str, int], BatchObserver | None]
LoadObserver = Callable[[float, BaseException | None], None]
"""Told the seconds each archive load took, and its error if it failed."""


class QuarantineError(ModelLoadError):
    """A stored version failed to load twice: record it, do not load it again until an admin
    retries it."""

    code = "quarantined"


class Loader:
    """Loads archives on their device and starts their batchers."""

    def __init__(
        self,
        default_device: str,
        default_policy: BatchPolicy,
        observer_factory: ObserverFactory | None = None,
        load_observer: LoadObserver | None = None,
        gate: ArchiveGate | None = None,
        hosts: HostPool | None = None,
    ) -> None:
        self.default_device = default_device
        self.default_policy = default_policy
        self.observer_factory = observer_factory
        self.load_observer = load_observer
        self.gate = gate  # archive screening + trial load (app.intake.gate); None trusts every archive
        self.hosts = hosts  # model host processes (app.hosting); None loads in this process

    async def load_new(
        self,
        archive: Path,
        device_request: str,
        meta: dict[str, Any],
        prepare: Callable[[LoadedModel], None] | None = None,
        label: str = "model",
    ) -> tuple[LoadedModel, dict[str, Any] | None]:
        """Admit and load an uploaded archive, warm it up on its example inputs; return it and
        its signature (declared in ``meta["io_spec"]``, else what the examples showed)."""
        resolved = resolve_device(device_request, self.default_device)
        if self.gate is not None:
            stage("screening")
            await asyncio.to_thread(self.gate.admit, archive)
        stage("loading")
        model = await self._load(archive, resolved, label)
        try:
            io_spec = await self._check_new(model, meta, prepare)
        except BaseException:
            model.close()
            raise
        return model, io_spec

    async def _check_new(self, model: LoadedModel, meta: dict[str, Any],
                         prepare: Callable[[LoadedModel], None] | None) -> dict[str, Any] | None:
        if self.gate is not None:
            stage("checking")
            await asyncio.to_thread(self.gate.check_loaded, model)
        io_spec = meta.get("io_spec")
        if io_spec is not None:
            check_declared(io_spec, model.signature)
        template = example_inputs(meta)
        if template is not None:
            stage("warming up")
            output = await asyncio.to_thread(warm_up, model, template)
            if io_spec is None:
                io_spec = {**describe(model.signature.names, template, output), "source": "example_inputs"}
        if prepare is not None:
            await asyncio.to_thread(prepare, model)
        return io_spec

    async def load_stored(self, stored: StoredVersion) -> LoadedModel:
        """Load a committed version (start-up): screened again, the rules may have tightened.
        Hosted, a load that fails is tried once more at once; a second failure raises
        ``QuarantineError`` (the caller records it: the version is not tried again)."""
        resolved = resolve_device(stored.meta.get("device"), self.default_device)
        if self.gate is not None:
            await asyncio.to_thread(self.gate.recheck, stored.archive)
        label = f"{stored.name}-v{stored.version}"
        attempts = 2 if self.hosts is not None else 1
        for attempt in range(1, attempts + 1):
            try:
                model = await self._load(stored.archive, resolved, label)
                break
            except ModelLoadError as exc:
                if attempt == attempts and self.hosts is not None:
                    raise QuarantineError(
                        f"quarantined after {attempts} failed loads: {exc.message}") from None
                if attempt == attempts:
                    raise
                log.warning("loading %s failed (attempt %d): %s", label, attempt, exc.message)
        try:
            if self.gate is not None:
                await asyncio.to_thread(self.gate.check_loaded, model)
        except BaseException:
            model.close()
            raise
        return model

    async def _load(self, archive: Path, device: str, label: str) -> LoadedModel:
        start = time.monotonic()
        try:
            if self.hosts is not None:
                model: LoadedModel = await asyncio.to_thread(self.hosts.load, label, str(archive), device)
            else:
                model = await asyncio.to_thread(load_model, archive, device)
        except Exception as exc:
            if self.load_observer is not None:
                self.load_observer(time.monotonic() - start, exc)
            raise
        if self.load_observer is not None:
            self.load_observer(time.monotonic() - start, None)
        return model

    async def serve(
        self, stored: StoredVersion, model: LoadedModel, learnt: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Start the version's batcher (batch safety decided first when examples exist); its
        signature starts from the stored one and what earlier requests showed (``learnt``)."""
        saved = stored.meta.get("batching", {})
        base = self.default_policy
        max_batch = saved.get("max_batch_size") or base.max_batch_size
        if model.batch.max_rows is not None:  # a dynamic batch Dim's upper bound
            max_batch = min(max_batch, model.batch.max_rows)
        policy = BatchPolicy(
            max_batch_size=max_batch,
            max_batch_delay_ms=saved.get("max_batch_delay_ms", base.max_batch_delay_ms),
            max_queue_size=base.max_queue_size,
            threads=saved.get("threads") or saved.get("workers") or base.threads,
            mode=saved.get("mode", base.mode),
            max_output_bytes=base.max_output_bytes,
        )
        if isinstance(model, HostedModel):
            model.moved(str(stored.archive))  # from the staging folder to the store
        observer = self.observer_factory(stored.name, stored.version) if self.observer_factory else None
        batcher = Batcher(model, policy, f"{stored.name}:{stored.version}", observer)
        template = example_inputs(stored.meta)
        if template is not None and batcher.state.enabled is None:
            stage("probing")
            # Known example inputs: decide batch safety now rather than on the first request.
            await asyncio.to_thread(batcher.decide_batching, template)
        batcher.start()
        log.info("serving %s version %d on %s", stored.name, stored.version, model.device)
        mv = ModelVersion(stored, model, batcher, expected=declared_dtypes(stored.meta))
        mv.learnt.seed(stored.meta.get("io_spec"))
        mv.learnt.seed(learnt)
        return mv
