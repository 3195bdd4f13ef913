"""A committed, loaded, serving model version, and what its info shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.serving.batching import Batcher
from app.serving.runtime import LoadedModel
from app.store import StoredVersion
from app.wire.shapes import LearntSignature


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
