"""Run a task in a separate, resource-limited process (compilation, trial loads).

The child is ``python -m app.sandbox.child TASK`` with a scrubbed environment (no tokens, no
settings), a private temporary working directory, address-space and CPU-time limits, no
core dumps, and a wall-clock timeout after which its whole process group is killed. A task
that crashes, hangs or allocates without bound fails alone; the server stays healthy.

``cancel_scope`` holds an event that cancels every task started in its context (a cancelled
upload operation): the process group is killed within a tenth of a second of the event.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

cancel_scope: ContextVar[threading.Event | None] = ContextVar("sandbox_cancel", default=None)
"""Set by whoever may cancel the work; ``asyncio.to_thread`` carries it into the thread."""

RESULT_FILE = "result.json"
PAYLOAD_FILE = "payload.json"
# PYTHONPATH: so the child imports the same code as the server (operators' architectures)
_KEEP_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one isolated task."""

    memory_bytes: int = 4 * 1024**3
    cpu_seconds: int = 120
    wall_seconds: float = 180.0
    threads: int = 1


class IsolationError(Exception):
    """The isolated task did not produce a result; ``reason`` is a short machine word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def scrubbed_env(workdir: Path, threads: int) -> dict[str, str]:
    """Only what Python and torch need; nothing from the server's configuration."""
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    env.update({
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "CUDA_VISIBLE_DEVICES": "",
    })
    return env


def _limit(limits: Limits) -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_isolated(
    task: str,
    payload: dict[str, Any],
    limits: Limits,
    files: dict[str, Path] | None = None,
    outputs: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Run ``task`` in a child process; return its JSON result or raise IsolationError.

    ``files`` are copied (hard-linked where possible) into the child's working directory under
    the given names; the child sees only that directory's paths in its payload. After a
    successful run, each regular file named in ``outputs`` is moved from the working directory
    to the given path (a missing one is an error).
    """
    with tempfile.TemporaryDirectory(prefix="scriptserve-task-") as tmp:
        workdir = Path(tmp)
        for name, source in (files or {}).items():
            target = workdir / name
            try:
                os.link(source, target)
            except OSError:  # another filesystem: copy in blocks, not through memory
                shutil.copyfile(source, target)
        (workdir / PAYLOAD_FILE).write_text(json.dumps(payload))
        log_path = workdir / "stderr.txt"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.sandbox.child", task],
                cwd=workdir,
                env=scrubbed_env(workdir, limits.threads),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=lambda: _limit(limits),  # noqa: PLW1509 - no threads touch rlimits
            )
            code = _wait(proc, limits.wall_seconds, cancel_scope.get())
        _kill_group(proc)  # anything it left running
        result_path = workdir / RESULT_FILE
        if result_path.is_file():
            result = json.loads(result_path.read_text())
            if result.get("ok"):
                _collect(workdir, outputs or {})
                return result
            raise IsolationError(result.get("reason", "failed"), result.get("message", "failed"))
        raise IsolationError(*_explain(code, log_path.read_text(errors="replace"), limits))


def _collect(workdir: Path, outputs: dict[str, Path]) -> None:
    for name, target in outputs.items():
        produced = workdir / name
        if produced.is_symlink() or not produced.is_file():
            raise IsolationError("no_output", f"the task did not produce {name}")
        shutil.move(produced, target)


def _wait(proc: subprocess.Popen, wall_seconds: float, cancel: threading.Event | None) -> int:
    """The child's exit status; kill its group at the wall-clock limit or on ``cancel``."""
    deadline = time.monotonic() + wall_seconds
    while True:
        left = deadline - time.monotonic()
        try:
            return proc.wait(max(0.0, min(left, 0.1)) if cancel is not None else max(0.0, left))
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                _kill_group(proc)
                raise IsolationError("cancelled", "the task was cancelled and killed") from None
            if time.monotonic() >= deadline:
                _kill_group(proc)
                raise IsolationError(
                    "timeout", f"the task ran longer than {wall_seconds:g} s and was killed"
                ) from None


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _explain(code: int, stderr: str, limits: Limits) -> tuple[str, str]:
    if code == -signal.SIGXCPU or code == -signal.SIGKILL and "CPU" in stderr:
        return "cpu_limit", f"the task used more than {limits.cpu_seconds} s of CPU time"
    if "MemoryError" in stderr or "std::bad_alloc" in stderr or "can't allocate memory" in stderr:
        mib = limits.memory_bytes // 2**20
        return "memory_limit", f"the task exceeded its memory limit of {mib} MiB"
    if code < 0:
        return "crashed", f"the task was killed by signal {signal.Signals(-code).name}"
    last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
    return "failed", f"the task exited with status {code}: {last[0][:300]}"
