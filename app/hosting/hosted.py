"""Model code behind the ``LoadedModel`` interface, run in supervised host processes.

``HostedModel`` is what the registry, batcher and routes hold when models are hosted: its
signature, batch limits and graph findings came back from the host at load as plain data;
``forward``, the batch-safety probe and the code view are calls to the host. ``HostPool``
decides which host a version goes to (``model_hosts``: one per version, or one per device)
and owns every host's lifecycle.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from app.errors import DeadlineExceededError, ModelLoadError, NotReadyError
from app.hosting.child import HostLimits, LoadedInfo
from app.hosting.host import HostFailure, ModelHost, RestartObserver
from app.serving.batch_safety import BatchSafety
from app.serving.runtime import LoadedModel

log = logging.getLogger(__name__)

CALL_LIMIT_S = 60.0
"""Limit of a probe or code-view call (no request deadline applies)."""


class HostedModel(LoadedModel):
    """A model loaded in a host process; every call runs there."""

    def __init__(self, pool: HostPool, host: ModelHost, key: str, info: LoadedInfo) -> None:
        self.pool = pool
        self.host = host
        self.key = key
        self.format = info.format
        self.device = torch.device(info.device)
        self.on_cuda = self.device.type == "cuda"
        self.signature = info.signature
        self.batch = info.batch
        self.floating_dtype = info.floating_dtype
        self._parameter_bytes = info.parameter_bytes
        self._findings = info.findings

    def parameter_bytes(self) -> int:
        return self._parameter_bytes

    def graph_findings(self) -> list[Any]:
        return list(self._findings)

    def code(self, view: str) -> dict[str, Any]:
        return self._call("code", (view,), CALL_LIMIT_S, None)

    def forward(self, inputs: list[torch.Tensor]) -> Any:
        return self.run(inputs)

    def run(self, inputs: list[torch.Tensor], deadline: float | None = None) -> Any:
        """Run in the host; past ``deadline`` plus the grace period the host is killed."""
        return self._call("forward", (inputs,), self._limit(deadline), deadline)

    def batch_safety(self, template: list[torch.Tensor], deadline: float | None = None) -> BatchSafety:
        return self._call("batch_safety", (template,), self._limit(deadline), deadline)

    def _limit(self, deadline: float | None) -> float:
        if deadline is None:
            return self.pool.load_timeout_s
        return deadline - time.monotonic() + self.pool.forward_grace_s

    def moved(self, archive: str) -> None:
        """The archive was committed to ``archive``: a restarted host loads it from there."""
        self.host.moved(self.key, archive)

    def close(self) -> None:
        self.pool.release(self)

    def _call(self, op: str, args: tuple[Any, ...], limit_s: float, deadline: float | None) -> Any:
        try:
            return self.host.call(op, (self.key, *args), max(0.0, limit_s))
        except HostFailure as exc:
            if exc.reason == "timeout" and deadline is not None:
                raise DeadlineExceededError(
                    f"the model was still running {self.pool.forward_grace_s:g} s past the "
                    "request's deadline; its host was killed and restarts") from None
            raise NotReadyError(f"{exc.message}; retry shortly",
                                headers={"Retry-After": "1"}) from None


class HostPool:
    """Every model host of this server: which host a version goes to, start, stop."""

    def __init__(self, mode: str, limits: HostLimits, load_timeout_s: float,
                 forward_grace_s: float, on_restart: RestartObserver | None = None) -> None:
        self.mode = mode  # "per-version" or "per-device"
        self.limits = limits
        self.load_timeout_s = load_timeout_s
        self.forward_grace_s = forward_grace_s
        self.on_restart = on_restart
        self._hosts: dict[str, ModelHost] = {}
        self._models: dict[str, HostedModel] = {}
        self.on_broken: Callable[[HostedModel, str], None] | None = None
        """Told (from a host's thread) of a model its host gave up reloading after restarts."""
        self._lock = threading.Lock()
        self._closed = False

    def hosts(self) -> list[ModelHost]:
        with self._lock:
            return list(self._hosts.values())

    def load(self, label: str, archive: str, device: str) -> HostedModel:
        """Load an archive in its host (started if needed); raise ModelLoadError on any failure."""
        key = f"{label}-{uuid.uuid4().hex[:8]}"
        group = key if self.mode == "per-version" else f"device-{device.replace(':', '')}"
        with self._lock:
            if self._closed:
                raise NotReadyError("the server is shutting down")
            host = self._hosts.get(group)
            fresh = host is None
            if host is None:
                # CUDA reserves far more address space than it uses: no RLIMIT_AS there
                limits = replace(self.limits, memory_bytes=0) if device.startswith("cuda") else self.limits
                host = self._hosts[group] = ModelHost(
                    label if self.mode == "per-version" else group, limits,
                    self.load_timeout_s, self.on_restart)
                host.on_broken = self._broken
        try:
            if fresh:
                host.start()
            info = host.load(key, archive, device)
        except HostFailure as exc:
            if self.mode == "per-version" or exc.reason == "stopped":
                self._drop(group, host)
            raise ModelLoadError(f"the model's host failed while loading it ({exc.reason}): "
                                 f"{exc.message}") from None
        except BaseException:
            if self.mode == "per-version":
                self._drop(group, host)
            raise
        model = HostedModel(self, host, key, info)
        with self._lock:
            self._models[key] = model
        return model

    def _broken(self, key: str, reason: str) -> None:
        with self._lock:
            model = self._models.get(key)
        if model is not None and self.on_broken is not None:
            self.on_broken(model, reason)

    def release(self, model: HostedModel) -> None:
        """The version is gone: forget it; a per-version host stops."""
        with self._lock:
            self._models.pop(model.key, None)
        if self.mode == "per-version":
            self._drop(model.key, model.host)
        else:
            model.host.unload(model.key)

    def _drop(self, group: str, host: ModelHost) -> None:
        with self._lock:
            if self._hosts.get(group) is host:
                del self._hosts[group]
        host.close()

    def close(self) -> None:
        """Kill every host (shutdown: what had to drain has drained)."""
        with self._lock:
            self._closed = True
            hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            host.close()
