"""A real ScriptServe process (``scriptserve serve``) on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """The process IDs whose parent is ``pid`` (a server's compile or trial processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def task_children(pid: int) -> list[int]:
    """A server's children other than its model hosts: its compile and trial processes."""
    found = []
    for child in children_of(pid):
        try:
            if b"app.hosting.child" not in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass  # it just ended
    return found


class LiveServer:
    """Start, stop, kill and restart a server process on a given store."""

    def __init__(self, store: Path | str, token: str, **env: str) -> None:
        self.store = store  # a directory, or s3://bucket/prefix (AWS_* from the environment)
        self.token = token
        self.port = free_port()
        self.grpc_port = free_port()
        self.extra_env = env
        self.proc: subprocess.Popen | None = None
        logs = store.parent if isinstance(store, Path) else Path(tempfile.gettempdir())
        self.log_path = logs / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, wait_ready: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTSERVE_")}
        env.update({
            "SCRIPTSERVE_MODEL_STORE": str(self.store),
            "SCRIPTSERVE_HOST": "127.0.0.1",
            "SCRIPTSERVE_PORT": str(self.port),
            "SCRIPTSERVE_GRPC_PORT": str(self.grpc_port),
            "SCRIPTSERVE_ADMIN_TOKEN": self.token,
            "SCRIPTSERVE_DEVICE": "cpu",
            "SCRIPTSERVE_LOG_LEVEL": "info",
            "SCRIPTSERVE_INSTALL_EXAMPLE": "false",
            **self.extra_env,
        })
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], env=env, stdout=log, stderr=log
        )
        if wait_ready:
            self.wait("/ready")

    def wait(self, path: str = "/health", timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not up: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def upload(self, name: str, path: Path, filename: str | None = None, **fields: str) -> httpx.Response:
        """POST /models with the admin token: the archive at ``path`` as ``name``."""
        with open(path, "rb") as fh:
            return httpx.post(f"{self.url}/models", headers=self.auth, timeout=120,
                              data={"name": name, **fields}, files={"file": (filename or path.name, fh)})

    def restart(self) -> None:
        self.stop()
        self.start()
