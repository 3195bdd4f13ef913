"""One supervised model host process: calls with limits, kill, restart with backoff.

``ModelHost`` owns the process and its pipe. A reader thread matches replies to calls; a call
that outlives its limit kills the host (the whole process group), and so does a host that
dies by itself: every call it held fails at once with ``HostFailure``, and the host starts
again in the background (after a backoff) and reloads the models it held. Nothing here runs
model code.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from app.errors import ModelLoadError, exception_line
from app.hosting import wire
from app.hosting.child import CallFailure, HostLimits, LoadedInfo

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
"""How long a new host may take to import torch and answer its first call."""


class HostFailure(Exception):
    """The host died, or was killed, while (or before) running a call; ``reason`` says which."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "timeout", "crashed", "memory", "restarting", "stopped"
        self.message = message


class CallError(RuntimeError):
    """The call raised inside the host (the host lives on); the message is the model's."""


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    value: Any = None
    failure: HostFailure | None = None


@dataclass(frozen=True)
class Hosted:
    """A model the host holds, so that a restarted host can load it again."""

    key: str
    archive: str
    device: str


RestartObserver = Callable[[str, str], None]
"""Told the host's label and the reason each time a host is restarted."""


class ModelHost:
    """A host process and the models it holds."""

    def __init__(self, label: str, limits: HostLimits, load_timeout_s: float,
                 on_restart: RestartObserver | None = None) -> None:
        self.label = label
        self.limits = limits
        self.load_timeout_s = load_timeout_s
        self.on_restart = on_restart
        self.models: dict[str, Hosted] = {}
        self.broken: dict[str, str] = {}  # key -> why it could not be reloaded after a restart
        self.on_broken: Callable[[str, str], None] | None = None  # told of a model given up
        self._reload_failures: dict[str, int] = {}
        self.restarts = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # process, pipe and pending calls
        self._send = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._process: Any = None
        self._conn: Any = None
        self._generation = 0
        self._ready = threading.Event()
        self._closed = False
        self._backoff_s = 0.5
        self._started_at = 0.0

    # lifecycle -----------------------------------------------------------------------------
    def start(self, ready: bool = True) -> None:
        """Start the process and wait until it answers (raise HostFailure if it does not);
        ``ready``: let calls in at once (a restart first loads the models again)."""
        with self._lock:
            if self._closed:
                raise HostFailure("stopped", f"model host {self.label} is stopped")
            ours, theirs = socket.socketpair()
            env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTSERVE_")}
            if self.limits.threads:
                # Every thread of the host, not only the one that calls set_num_threads: the
                # pool threads' OpenMP teams otherwise spun on every core (perf: most of the
                # host's CPU under load, 30 -> 80-140 us a request, taken from the workers).
                env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.limits.threads)
            process = subprocess.Popen(
                [sys.executable, "-m", "app.hosting.child", str(theirs.fileno()),
                 json.dumps(asdict(self.limits)), self.label],
                env=env, stdin=subprocess.DEVNULL, pass_fds=[theirs.fileno()],
                start_new_session=True,  # killed as a group; the server's signals miss it
            )
            theirs.close()
            parent = Connection(ours.detach())
            self._process, self._conn = process, parent
            self._generation += 1
            generation = self._generation
            self._started_at = time.monotonic()
        threading.Thread(target=self._read, args=(parent, generation), daemon=True,
                         name=f"host-reader-{self.label}").start()
        pid = self._call("ping", (), START_TIMEOUT_S, wait_ready=False)
        log.info("model host %s started (pid %s)", self.label, pid)
        if ready:
            self._ready.set()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def ready(self) -> bool:
        """Started and holding its models (not restarting)."""
        return self._ready.is_set() and not self._closed

    def close(self) -> None:
        """Kill the process for good; calls in flight fail with reason ``stopped``."""
        self._closed = True
        self._kill(HostFailure("stopped", f"model host {self.label} was stopped"))
        self._ready.set()  # waiters see the closed host at once

    def kill(self, failure: HostFailure) -> None:
        """Kill the process now (its calls fail with ``failure``) and start it again soon."""
        if self._kill(failure):
            self._schedule_restart(failure.reason)

    def _kill(self, failure: HostFailure) -> bool:
        with self._lock:
            process, conn = self._process, self._conn
            self._process = self._conn = None
            pending, self._pending = self._pending, {}
            if process is None:
                return False
            self._ready.clear()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        with contextlib.suppress(OSError):
            conn.close()
        for slot in pending.values():
            slot.failure = failure
            slot.done.set()
        return True

    def _schedule_restart(self, reason: str) -> None:
        if self._closed:
            return
        if time.monotonic() - self._started_at > 60:
            self._backoff_s = 0.5  # it had been up a while: not a crash loop
        delay, self._backoff_s = self._backoff_s, min(self._backoff_s * 2, 30.0)
        log.warning("model host %s %s; restarting in %.1fs", self.label, reason, delay)
        threading.Thread(target=self._restart, args=(delay, reason), daemon=True,
                         name=f"host-restart-{self.label}").start()

    def _restart(self, delay: float, reason: str) -> None:
        time.sleep(delay)
        if self._closed:
            return
        try:
            self.start(ready=False)
        except HostFailure as exc:
            log.error("model host %s did not start again: %s", self.label, exc.message)
            self._schedule_restart("failed to start")
            return
        self.restarts += 1
        if self.on_restart is not None:
            self.on_restart(self.label, reason)
        for hosted in list(self.models.values()):
            try:
                self._call("load", (hosted.key, hosted.archive, hosted.device), self.load_timeout_s,
                           wait_ready=False)
                self.broken.pop(hosted.key, None)
                self._reload_failures.pop(hosted.key, None)
            except (HostFailure, CallError, ModelLoadError) as exc:
                self._reload_failed(hosted.key, getattr(exc, "message", None) or str(exc))
                if isinstance(exc, HostFailure):
                    return  # this host is gone again: its next restart tries the rest
        self._ready.set()

    def _reload_failed(self, key: str, text: str) -> None:
        reason = exception_line(text)
        self.broken[key] = reason
        failures = self._reload_failures[key] = self._reload_failures.get(key, 0) + 1
        log.error("model host %s could not reload %s (%d): %s", self.label, key, failures, text)
        if failures >= 2:  # never a crash loop: the model is given up, the host goes on
            self.models.pop(key, None)
            if self.on_broken is not None:
                self.on_broken(key, f"its load failed twice after its host restarted: {reason}")

    # calls ---------------------------------------------------------------------------------
    def load(self, key: str, archive: str, device: str) -> LoadedInfo:
        """Load an archive in the host; raise ModelLoadError (its load failed), HostFailure."""
        info = self._call("load", (key, archive, device), self.load_timeout_s)
        self.models[key] = Hosted(key, archive, device)
        return info

    def moved(self, key: str, archive: str) -> None:
        """The model's archive now lives at ``archive`` (committed): reload it from there."""
        hosted = self.models.get(key)
        if hosted is not None:
            self.models[key] = Hosted(key, archive, hosted.device)

    def unload(self, key: str) -> None:
        """Forget a model (the host keeps running for the others)."""
        self.models.pop(key, None)
        self.broken.pop(key, None)
        with contextlib.suppress(HostFailure, CallError):
            self._call("unload", (key,), 10.0)

    def call(self, op: str, args: tuple[Any, ...], limit_s: float) -> Any:
        """Run ``op`` in the host; past ``limit_s`` the host is killed (HostFailure "timeout")."""
        return self._call(op, args, limit_s)

    def _call(self, op: str, args: tuple[Any, ...], limit_s: float, wait_ready: bool = True) -> Any:
        deadline = time.monotonic() + limit_s
        if wait_ready and not self._ready.wait(max(0.0, limit_s)):
            raise HostFailure("restarting", f"model host {self.label} is restarting")
        key = args[0] if wait_ready and args and isinstance(args[0], str) else None
        if key is not None and key in self.broken:
            raise HostFailure("broken", f"the model could not be loaded again after its host "
                                        f"restarted: {self.broken[key]}")
        slot = _Pending()
        with self._lock:
            conn = self._conn
            if conn is None or self._closed:
                reason = "stopped" if self._closed else "restarting"
                raise HostFailure(reason, f"model host {self.label} is {reason}")
            call_id = next(self._ids)
            self._pending[call_id] = slot
        data = wire.dumps((call_id, op, args))
        try:
            with self._send:
                conn.send_bytes(data)
        except (OSError, ValueError):
            pass  # the reader sees the death and fails the slot
        if not slot.done.wait(max(0.0, deadline - time.monotonic())):
            self.kill(HostFailure("timeout", f"{op} ran longer than {limit_s:g} s in model host "
                                             f"{self.label}; the host was killed"))
            slot.done.wait(5)
        if slot.failure is not None:
            raise slot.failure
        if not slot.ok:
            if slot.value.out_of_memory:
                self._recycle()
            raise _from_failure(slot.value)
        return slot.value

    def _recycle(self) -> None:
        """After a call ran out of memory, start afresh (allocator state after a failed huge
        allocation is not worth trusting) unless other calls are running in it."""
        with self._lock:
            busy = bool(self._pending)
        if not busy:
            self.kill(HostFailure("memory", f"model host {self.label} ran out of memory"))

    def _read(self, conn: Any, generation: int) -> None:
        while True:
            try:
                call_id, ok, value = wire.loads(conn.recv_bytes())
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            with self._lock:
                slot = self._pending.pop(call_id, None)
            if slot is not None:
                slot.ok, slot.value = ok, value
                slot.done.set()
        with self._lock:
            current = generation == self._generation and self._conn is conn
        if current and not self._closed:
            process = self._process
            code = None
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = process.wait(1)
            self.kill(HostFailure("crashed", f"model host {self.label} exited ({_describe(code)})"))


def _describe(code: int | None) -> str:
    if code is None:
        return "status unknown"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"status {code}"


def _from_failure(failure: CallFailure) -> Exception:
    if failure.kind == "ModelLoadError":
        return ModelLoadError(failure.message)
    if failure.out_of_memory:
        return MemoryError(failure.message)
    return CallError(failure.message)
