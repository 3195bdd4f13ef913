"""Several real servers on one shared store behind haproxy, as replicas run in production."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.server import LiveServer, free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def haproxy_available() -> bool:
    return Path(HAPROXY).exists()


class Cluster:
    """``count`` servers on ``store`` (syncing every ``sync_s``) and haproxy in front, with
    active health checks on ``/ready``.

    ``store`` is a shared directory, or ``s3://bucket/prefix`` (the AWS_* variables of this
    process say where S3 is); then each replica gets its own cache folder under ``workdir``.
    Every replica is given the admin ``token``: with S3 there is no shared folder where a
    generated token could be found by all of them."""

    def __init__(self, store: Path | str, token: str, count: int = 3, sync_s: float = 1.0,
                 workdir: Path | None = None, **env: str) -> None:
        self.store = store
        self.workdir = workdir or (store.parent if isinstance(store, Path) else Path("."))
        self.servers = []
        for i in range(count):
            own = {} if isinstance(store, Path) else {
                "SCRIPTSERVE_STORE_CACHE_DIR": str(self.workdir / f"cache-{i}")}
            server = LiveServer(store, token, SCRIPTSERVE_STORE_SYNC_S=str(sync_s), **own, **env)
            server.log_path = self.workdir / f"replica-{i}.log"
            self.servers.append(server)
        self.port = free_port()
        self.config = self.workdir / "haproxy.cfg"
        self.proc: subprocess.Popen | None = None
        self.sync_s = sync_s

    @property
    def kind(self) -> str:
        return "files" if isinstance(self.store, Path) else "s3"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return self.servers[0].auth

    def _write_config(self) -> None:
        backends = "\n".join(
            f"  server s{i} 127.0.0.1:{s.port} check inter 300ms fall 2 rise 1"
            for i, s in enumerate(self.servers)
        )
        self.config.write_text(f"""global
  maxconn 2048
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
frontend front
  bind 127.0.0.1:{self.port}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /ready
  http-check expect status 200
  retry-on conn-failure empty-response
  retries 2
{backends}
""")

    def start(self) -> None:
        if isinstance(self.store, Path):
            self.store.mkdir(parents=True, exist_ok=True)
        for server in self.servers:
            server.start(wait_ready=False)
        for server in self.servers:
            server.wait("/ready")
        self._write_config()
        log = open(self.workdir / "haproxy.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("haproxy did not come up")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        for server in self.servers:
            server.stop()

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
