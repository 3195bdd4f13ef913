"""A committed, loaded, serving model version, and what its info shows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from app.serving.batching import Batcher
from app.serving.runtime import LoadedModel
from app.store import StoredVersion
from app.wire.dtypes import BY_DATATYPE
from app.wire.shapes import LearntSignature

log = logging.getLogger(__name__)

SAVE_DELAY_S = 1.0
"""A widened signature is saved at most this often (a burst of new shapes: one write)."""
LearntSink = Callable[[StoredVersion, dict[str, Any]], None]


def declared_dtypes(meta: dict[str, Any]) -> dict[str, torch.dtype]:
    """Input dtypes a version's stored signature fixes (declared, or from example inputs)."""
    spec = meta.get("io_spec") or {}
    out = {}
    for item in spec.get("inputs") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            known = BY_DATATYPE.get(item.get("datatype"))  # type: ignore[arg-type]
            if known is not None:
                out[item["name"]] = known.torch
    return out


@dataclass
class ModelVersion:
    """A committed, loaded, serving version."""

    stored: StoredVersion
    model: LoadedModel
    batcher: Batcher
    # Input dtypes the stored signature fixes: inputs are cast to them or refused (app.wire.casting).
    expected: dict[str, torch.dtype] = field(default_factory=dict)
    # Tensor names, dtypes and shapes from the examples and successful requests (v2 metadata).
    learnt: LearntSignature = field(default_factory=LearntSignature)
    # Where a widened signature is saved (the store; set when the version becomes visible).
    learnt_sink: LearntSink | None = None
    _save_pending: bool = field(default=False, init=False, repr=False)
    _dirty: bool = field(default=False, init=False, repr=False)
    _saving: set[asyncio.Future] = field(default_factory=set, init=False, repr=False)

    def learnt_changed(self) -> None:
        """Save the widened signature soon (event loop only; at most once per SAVE_DELAY_S)."""
        self._dirty = True
        if self.learnt_sink is None or self._save_pending:
            return
        self._save_pending = True
        asyncio.get_running_loop().call_later(SAVE_DELAY_S, self._save)

    def _save(self) -> None:
        self._save_pending = False
        if self.learnt_sink is None or not self._dirty:
            return
        self._dirty = False
        future = asyncio.ensure_future(
            asyncio.to_thread(self.learnt_sink, self.stored, self.learnt.as_json()))
        self._saving.add(future)
        future.add_done_callback(self._saved)

    async def flush_learnt(self) -> None:
        """Save a widened signature not saved yet (shutdown)."""
        if self.learnt_sink is not None and self._dirty:
            self._dirty = False
            await asyncio.to_thread(self.learnt_sink, self.stored, self.learnt.as_json())

    def _saved(self, future: asyncio.Future) -> None:
        self._saving.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("could not save the signature of %s/%d: %s", self.name, self.version,
                        future.exception())

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
            "format": self.model.format,
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
                **({"program": self.model.batch.note} if self.model.batch.note else {}),
            },
            "queue_depth": self.batcher.queue_depth,
            "in_flight": self.batcher.in_flight,
            **({"compile": meta["compile"]} if "compile" in meta else {}),
            **({"warnings": meta["warnings"]} if meta.get("warnings") else {}),
        }
