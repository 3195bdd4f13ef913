"""Admission of archives: every check an archive passes before the server loads it.

1. zip structure and limits (``app.intake.archive``): no torch, directory only; the format
   (TorchScript, ExportedProgram or AOTInductor package) is read from the contents;
2. contents (``app.intake.screening``; ``app.intake.pt2_screening`` for ``.pt2``): sources,
   serialized graphs and pickles against the op policy;
3. a trial load in a separate, resource-limited process (``app.intake.trial``);
4. after the server's own load: the loaded graphs again.

The registry calls ``admit`` before loading a new version and ``recheck`` (steps 1-2)
before loading a stored one at start-up, then ``check_loaded`` after either load.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config import Settings
from app.intake.archive import ArchiveInfo, ZipLimits, require_servable
from app.intake.operations import stage
from app.intake.pt2_screening import screen_pt2
from app.intake.screening import refuse, require_safe_module, screen_contents
from app.intake.trial import TrialLimits, trial_load

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveGate:
    """The checks between an uploaded file and ``torch.jit.load`` in the server."""

    zip_limits: ZipLimits = ZipLimits()
    trial_limits: TrialLimits = TrialLimits()
    trial: bool = True
    allow_aoti: bool = True  # AOTInductor packages carry native code (docs/security.md)
    # at most two trial processes at once, so concurrent uploads cannot multiply their memory
    _trials: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(2), repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveGate:
        return cls(
            zip_limits=ZipLimits(
                max_entries=settings.max_archive_entries,
                max_uncompressed_bytes=settings.max_archive_uncompressed_bytes,
                max_compression_ratio=settings.max_compression_ratio,
            ),
            trial_limits=TrialLimits(
                memory_bytes=settings.trial_memory_bytes, timeout_s=settings.trial_timeout_s
            ),
            trial=settings.trial_load,
            allow_aoti=settings.allow_aoti_uploads,
        )

    def recheck(self, path: Path) -> ArchiveInfo:
        """Structure and content screening (no torch); raise 400 / 413 / 422."""
        info = require_servable(path, self.zip_limits)
        if info.kind == "torchscript":
            screen_contents(path, info.prefix)
        else:
            screen_pt2(path, info, self.allow_aoti)
        return info

    def admit(self, path: Path) -> ArchiveInfo:
        """Every check before a new archive is loaded in the server; raise 400 / 413 / 422."""
        info = self.recheck(path)
        if self.trial:
            stage("trial load")
            with self._trials:
                result = trial_load(path, info.uncompressed_bytes, self.trial_limits)
            log.info("trial load passed: %s compiled functions checked", result.get("functions"))
        return info

    def check_loaded(self, model: Any) -> None:
        """The graphs of a model (a ``LoadedModel`` or a ScriptModule) the server loaded; raise 422."""
        if hasattr(model, "graph_findings"):
            findings = model.graph_findings()
            if findings:
                raise refuse(findings)
            return
        require_safe_module(model)
