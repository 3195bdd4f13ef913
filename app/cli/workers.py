"""``scriptserve serve --workers N``: N server processes on one port, supervised.

The supervisor binds the port once and hands the listening socket to each worker, so the
kernel gives each new connection to whichever worker accepts first (a busy worker accepts
less). Every worker is a full server: its own registry, batchers and store sync, converging
through the store like replicas behind a balancer. The supervisor runs no model code and
never imports torch; it restarts a worker that dies (with backoff) and, on SIGTERM or
SIGINT, passes SIGTERM to every worker and waits for them to drain.

Each worker also listens on ``<run dir>/worker-<i>.sock``, where the worker answering
``GET /metrics`` collects its siblings' numbers (``app.telemetry.federation``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from app.config import Settings
from app.telemetry.federation import RESTARTS_FILE

log = logging.getLogger("app.workers")

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits before restarting a worker that died again soon after its last start."""
STABLE_S = 60.0
"""A worker that ran this long before dying is restarted at once (its backoff resets)."""


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The shared listening socket (inheritable, so workers can take it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def threads_per_worker(settings: Settings, count: int) -> int:
    """Intra-op threads for each worker: the configured number, else the cores split evenly."""
    if settings.torch_threads:
        return settings.torch_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // count)


def _die_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies (Linux; else nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


SUN_PATH_MAX = 107  # bytes of a unix socket's path (sockaddr_un.sun_path less its NUL, Linux)


def run_dir(count: int) -> Path:
    """A private folder for the workers' sockets: under ``$TMPDIR``, or under ``/tmp`` where
    ``$TMPDIR`` is too deep for a unix socket's path."""
    from app.telemetry.federation import worker_socket_path

    folder = Path(tempfile.mkdtemp(prefix="scriptserve-workers-"))
    if len(os.fsencode(worker_socket_path(folder, count))) <= SUN_PATH_MAX:
        return folder
    folder.rmdir()
    return Path(tempfile.mkdtemp(prefix="scriptserve-workers-", dir="/tmp"))


class Supervisor:
    """Starts, watches, restarts and stops the workers of one group."""

    def __init__(self, settings: Settings, count: int, overrides: dict[str, object]) -> None:
        self.settings = settings
        self.count = count
        self.sock = listen(settings.host, settings.port)
        self.run_dir = run_dir(count)
        env = {k: v for k, v in os.environ.items() if k != "SCRIPTSERVE_WORKERS"}
        env.update({f"SCRIPTSERVE_{k.upper()}": str(v) for k, v in overrides.items()})
        env.update({
            "SCRIPTSERVE_WORKER_DIR": str(self.run_dir),
            "SCRIPTSERVE_WORKER_FD": str(self.sock.fileno()),
            "SCRIPTSERVE_TORCH_THREADS": str(threads_per_worker(settings, count)),
        })
        self.env = env
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.restarts = 0
        self.stopping = threading.Event()

    def spawn(self, index: int) -> None:
        env = {**self.env, "SCRIPTSERVE_WORKER_INDEX": str(index),
               "SCRIPTSERVE_WORKER_RESTARTED": "1" if index in self.procs else "0"}
        self.procs[index] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "app.cli", "serve"], env=env,
            pass_fds=(self.sock.fileno(),), preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        self.started[index] = time.monotonic()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        log.info("starting %d workers on %s:%d (%s intra-op threads each)", self.count,
                 self.settings.host, self.sock.getsockname()[1], self.env["SCRIPTSERVE_TORCH_THREADS"])
        try:
            for index in range(self.count):
                self.spawn(index)
            due: dict[int, float] = {}
            while not self.stopping.wait(0.2):
                self._watch(due)
        finally:
            self._stop_all()
            self.sock.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return 0

    def _watch(self, due: dict[int, float]) -> None:
        """Restart dead workers: at once after a long run, else after a growing backoff."""
        now = time.monotonic()
        for index, proc in list(self.procs.items()):
            if index in due:
                if now >= due[index]:
                    del due[index]
                    self.spawn(index)
                continue
            code = proc.poll()
            if code is None:
                continue
            ran = now - self.started[index]
            self.failures[index] = 0 if ran >= STABLE_S else self.failures.get(index, 0) + 1
            wait = BACKOFF_S[min(self.failures[index], len(BACKOFF_S)) - 1] if self.failures[index] else 0.0
            log.error("worker %d (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                      index, proc.pid, code, ran, wait)
            self.restarts += 1
            (self.run_dir / RESTARTS_FILE).write_text(json.dumps({"restarts": self.restarts}))
            due[index] = now + wait

    def _stop_all(self) -> None:
        """SIGTERM every worker; each drains within the shutdown grace, then SIGKILL."""
        alive = [p for p in self.procs.values() if p.poll() is None]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s + 10
        for proc in alive:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop within the grace period; killing it", proc.pid)
                proc.kill()
                proc.wait()


def supervise(settings: Settings, count: int, overrides: dict[str, object]) -> int:
    """Run ``count`` workers until SIGTERM or SIGINT; 0 when they stopped."""
    return Supervisor(settings, count, overrides).run()

