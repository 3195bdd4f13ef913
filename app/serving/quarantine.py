"""Versions that cannot be loaded: which, why, and the store records that keep them out.

A stored version whose load fails, hangs or kills its host twice (``loader.QuarantineError``),
or that its restarted host could not load again twice, is quarantined: recorded in the store
(``ModelStore.write_quarantine``) so that no server sharing it tries again, until an admin
retries or deletes it (docs/isolation.md).
"""

from __future__ import annotations

import asyncio
import logging

from app.errors import redact_paths
from app.store import ModelStore

log = logging.getLogger(__name__)


class Quarantine:
    """The versions quarantined here, ``"name/version" -> reason``, kept in step with the store."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self.reasons: dict[str, str] = {}

    def __contains__(self, key: object) -> bool:
        return key in self.reasons

    def __len__(self) -> int:
        return len(self.reasons)

    def versions(self, name: str) -> list[int]:
        """Versions of ``name`` quarantined (not loaded until an admin retries them)."""
        return sorted(int(k.rsplit("/", 1)[1]) for k in self.reasons if k.rsplit("/", 1)[0] == name)

    def reason(self, name: str, version: int) -> str:
        return self.reasons.get(f"{name}/{version}", "")

    def mark(self, key: str, reason: str) -> None:
        """Note a quarantine the store holds (logged once per server)."""
        if key not in self.reasons:
            log.error("model version %s is quarantined (not loaded until an admin retries it: "
                      "POST /models/<name>/versions/<v>/retry): %s", key, reason)
        self.reasons[key] = reason

    def forget(self, key: str) -> None:
        self.reasons.pop(key, None)

    async def record(self, name: str, version: int, reason: str) -> str:
        """Quarantine a version here and in the store; returns the reason as shown."""
        reason = redact_paths(reason)[:300]
        self.mark(f"{name}/{version}", reason)
        try:
            await asyncio.to_thread(self.store.write_quarantine, name, version, reason)
        except Exception as exc:  # kept here at least; other servers decide for themselves
            log.error("could not record the quarantine of %s/%d in the store: %s", name, version, exc)
        return reason

    async def lift(self, name: str, version: int) -> None:
        """Lift a quarantine here and in the store (an admin's retry)."""
        if f"{name}/{version}" in self.reasons:
            await asyncio.to_thread(self.store.write_quarantine, name, version, None)
        self.forget(f"{name}/{version}")
