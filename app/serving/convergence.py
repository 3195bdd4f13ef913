"""When this server reconciles with the store: a poll with jitter, and on demand.

Every ``store_sync_s`` (+-20%, so replicas do not poll in step) the registry reconciles with
a fresh read of the store. A request naming a model or version this server does not know
asks the store first (one read of that key; a full sync if it exists), so a client that uses
the version number its upload returned reads its own write on any replica at once. Syncs are
single-flight: concurrent callers share the one that runs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from app.errors import exception_line
from app.serving.registry import Registry

log = logging.getLogger(__name__)
GC_EVERY_S = 600.0


@dataclass
class SyncStats:
    """What the store metrics show."""

    syncs: int = 0
    errors: int = 0
    last_ok: float = 0.0  # Unix time of the last complete sync
    last_seconds: float = 0.0
    last_error: str = ""
    known: dict[str, int] = field(default_factory=dict)  # live versions per model, last sync


class StoreSync:
    """Keeps one registry converged on its store."""

    def __init__(self, registry: Registry, interval_s: float, gc_grace_s: float) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self.gc_grace_s = gc_grace_s
        self.stats = SyncStats()
        self._running: asyncio.Task | None = None
        self._last_gc = time.monotonic()
        registry.on_miss = self.on_miss

    async def sync(self) -> None:
        """Reconcile now, or join the reconcile already running."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._sync_once())
        await asyncio.shield(self._running)

    async def _sync_once(self) -> None:
        start = time.monotonic()
        try:
            state = await asyncio.to_thread(self.registry.store.state)
            self.stats.known = {name: len(vs) for name, vs in state.versions.items()}
            await self.registry.reconcile(state)
        except Exception as exc:
            self.stats.errors += 1
            self.stats.last_error = exception_line(exc)
            log.error("store sync failed: %s", self.stats.last_error)
            raise
        self.stats.syncs += 1
        self.stats.last_ok = time.time()
        self.stats.last_seconds = time.monotonic() - start

    async def on_miss(self, name: str, version: int | None) -> bool:
        """May the store know ``name`` (``version``)? Sync if so; True if it is served now."""
        store = self.registry.store
        try:
            if version is not None:
                known = await asyncio.to_thread(store.lookup, name, version) is not None
            else:
                known = bool(await asyncio.to_thread(store.versions, name))
            if known:
                await self.sync()
        except Exception as exc:  # the store is down: the 404 stands, the log says why
            log.warning("store lookup for %s failed: %s", name, exception_line(exc))
            return False
        return known

    async def run(self) -> None:
        """Poll until cancelled; collect garbage now and then."""
        if self.interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.interval_s * random.uniform(0.8, 1.2))
            try:
                await self.sync()
            except Exception:
                continue  # counted and logged; try again next round
            if time.monotonic() - self._last_gc > GC_EVERY_S:
                self._last_gc = time.monotonic()
                try:
                    collected = await asyncio.to_thread(
                        self.registry.store.collect_garbage, self.gc_grace_s)
                    if collected:
                        log.info("collected %d unused archive(s) from the store", len(collected))
                except Exception as exc:
                    log.warning("store garbage collection failed: %s", exception_line(exc))
