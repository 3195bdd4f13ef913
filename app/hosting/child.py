"""The model host process: loads models and runs their code; the server never does.

Started by ``app.hosting.host.ModelHost`` as ``python -m app.hosting.child FD LIMITS LABEL``
(a fresh interpreter: it owns its CUDA context; a new session: killed as a group). It reads
calls from its socket, runs each on a thread of its own pool, and writes one reply per call. It limits its own
address space first (``RLIMIT_AS``), leaves the server's process group, drops the server's
settings from its environment, and exits when its pipe closes or the server is gone.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from app.hosting import wire


@dataclass(frozen=True)
class HostLimits:
    """What one host process may use."""

    memory_bytes: int = 0  # RLIMIT_AS; 0: none (CUDA hosts: see docs/isolation.md)
    threads: int = 0  # torch intra-op threads; 0: torch's default
    concurrency: int = 8  # calls run at once (inference threads of every model it holds)


@dataclass(frozen=True)
class LoadedInfo:
    """What the server needs of a loaded model, as plain data."""

    format: str
    device: str
    signature: Any  # runtime.Signature
    batch: Any  # runtime.BatchDim
    floating_dtype: Any  # torch.dtype | None
    parameter_bytes: int
    findings: list[Any]  # screening.Finding


@dataclass(frozen=True)
class CallFailure:
    """A call that raised in the host: the exception's type name, message, and whether it was OOM."""

    kind: str
    message: str
    out_of_memory: bool


def main(conn: Connection, limits: HostLimits) -> None:
    """Serve calls until the pipe closes."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    for key in [k for k in os.environ if k.startswith("SCRIPTSERVE_")]:
        del os.environ[key]  # tokens and settings are the server's, not the model's
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server; it stops us
    threading.Thread(target=_orphan_watch, args=(os.getppid(),), daemon=True).start()
    Host(conn, limits).run()


def _orphan_watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


class Host:
    """The calls a host answers: load, forward, probe, code, unload."""

    def __init__(self, conn: Connection, limits: HostLimits) -> None:
        import torch

        if limits.threads:
            torch.set_num_threads(limits.threads)
        torch.set_grad_enabled(False)
        self.conn = conn
        self.models: dict[str, Any] = {}
        self.send_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=max(1, limits.concurrency),
                                       thread_name_prefix="host")

    def run(self) -> None:
        while True:
            try:
                raw = self.conn.recv_bytes()
            except (EOFError, OSError):
                os._exit(0)
            call_id, op, args = wire.loads(raw)
            self.pool.submit(self._answer, call_id, op, args)

    def _answer(self, call_id: int, op: str, args: tuple[Any, ...]) -> None:
        try:
            reply: tuple[int, bool, Any] = (call_id, True, getattr(self, f"op_{op}")(*args))
            data = wire.dumps(reply)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the server
            data = wire.dumps((call_id, False, _failure(exc)))
        with self.send_lock:
            try:
                self.conn.send_bytes(data)
            except (EOFError, OSError):
                os._exit(0)

    # operations ----------------------------------------------------------------------------
    def op_ping(self) -> int:
        return os.getpid()

    def op_load(self, key: str, archive: str, device: str) -> LoadedInfo:
        from app.serving.runtime import load_model

        model = load_model(Path(archive), device)
        self.models[key] = model
        return LoadedInfo(
            format=model.format, device=str(model.device), signature=model.signature,
            batch=model.batch, floating_dtype=model.floating_dtype,
            parameter_bytes=model.parameter_bytes(), findings=list(model.graph_findings()),
        )

    def op_forward(self, key: str, inputs: list[Any]) -> Any:
        return self.models[key].forward(inputs)

    def op_batch_safety(self, key: str, template: list[Any]) -> Any:
        from app.serving.batch_safety import check_batch_safety

        return check_batch_safety(self.models[key].forward, template)

    def op_code(self, key: str, view: str) -> dict[str, Any]:
        result: dict[str, Any] = self.models[key].code(view)
        return result

    def op_unload(self, key: str) -> None:
        self.models.pop(key, None)


def _failure(exc: BaseException) -> CallFailure:
    from app.errors import is_out_of_memory

    message = str(exc) or type(exc).__name__
    return CallFailure(type(exc).__name__, message[:4000], is_out_of_memory(exc))


if __name__ == "__main__":
    # Run the importable copy of this module (pickled classes must name app.hosting.child).
    from app.hosting.child import HostLimits as _Limits
    from app.hosting.child import main as _main

    _main(Connection(int(sys.argv[1])), _Limits(**json.loads(sys.argv[2])))
