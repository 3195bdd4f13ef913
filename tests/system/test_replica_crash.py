"""kill -9 of the writing replica during a 100 MB upload, on a shared directory and on S3: no
other replica ever lists a partial or unloadable version while it happens, and once the
killed replica restarts all three agree.

Two moments: mid-body (the client holds the rest of the body back, so the kill lands inside
the upload whatever the machine's speed) and just after the body (the kill lands somewhere
in parse / load / commit: the version is then either everywhere or nowhere)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from tests.support.api import TOKEN
from tests.support.cluster import Cluster, haproxy_available
from tests.support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not haproxy_available(), reason="haproxy is not installed (apt install haproxy)"),
]
BOUNDARY = "scriptserve-replica-crash"
CHUNK = 1 << 20
FEATURES = 5000
X = {"inputs": [[0.5] * FEATURES]}


@pytest.fixture(scope="module", params=["files", "s3"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp(f"replica-crash-{request.param}")
    store: Path | str = root / "store"
    if request.param == "s3":
        pytest.importorskip("boto3")
        moto: MotoS3 = request.getfixturevalue("moto_s3")  # sets AWS_*: the replicas inherit them
        store = f"s3://{moto.new_bucket()}/crash"
    with Cluster(store, TOKEN, count=3, sync_s=1.0, workdir=root,
                 SCRIPTSERVE_REQUEST_TIMEOUT_S="600") as c:
        yield c


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small and a real 100 MB TorchScript archive (Linear 5000 x 5000), same input shape."""
    folder = tmp_path_factory.mktemp("crash-archives")
    small, big = folder / "small.torchscript", folder / "big.torchscript"
    torch.jit.script(torch.nn.Linear(FEATURES, 2, bias=False)).save(str(small))
    torch.jit.script(torch.nn.Linear(FEATURES, FEATURES, bias=False)).save(str(big))
    assert big.stat().st_size >= 100_000_000
    yield small, big
    big.unlink()


def body(path: Path, name: str, pause_after: int, paused: threading.Event,
         resume: threading.Event, sent_all: threading.Event) -> Iterator[bytes]:
    """A multipart body that waits for ``resume`` after ``pause_after`` bytes of the file."""
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
           f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
           f"filename=\"{path.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    sent = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            if sent >= pause_after and not resume.is_set():
                paused.set()
                resume.wait(300)
            yield block
            sent += len(block)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()
    sent_all.set()


class Watcher(threading.Thread):
    """Polls the listings of ``servers`` until stopped; every listed version of ``name`` must
    predict 200. Keeps what it saw and every violation."""

    def __init__(self, servers: list, name: str) -> None:
        super().__init__(daemon=True)
        self.urls = [s.url for s in servers]
        self.name = name
        self.stop = threading.Event()
        self.checked: set[tuple[str, int]] = set()
        self.polls = 0
        self.violations: list[str] = []

    def run(self) -> None:
        with httpx.Client(timeout=120) as http:
            while not self.stop.is_set():
                for url in self.urls:
                    models = http.get(f"{url}/models").json()["models"]
                    versions = next((m["versions"] for m in models if m["name"] == self.name), [])
                    for version in versions:
                        r = http.post(f"{url}/models/{self.name}/versions/{version}/predict", json=X)
                        if r.status_code != 200:
                            self.violations.append(f"{url} lists {self.name} v{version}: {r.text[:200]}")
                        self.checked.add((url, version))
                    info = http.get(f"{url}/models/{self.name}")
                    if versions and info.status_code != 200:
                        self.violations.append(f"{url} lists {self.name} but describes it {info.status_code}")
                self.polls += 1
                time.sleep(0.05)


def listing(url: str) -> dict[str, list[int]]:
    return {m["name"]: m["versions"] for m in httpx.get(f"{url}/models", timeout=30).json()["models"]}


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{url}/metrics has no {name}")


def staging_leftovers(cluster: Cluster, index: int) -> list[Path]:
    folder = (cluster.store / ".staging" if isinstance(cluster.store, Path)
              else cluster.workdir / f"cache-{index}" / ".staging")
    return list(folder.iterdir()) if folder.exists() else []


def crash_upload(cluster: Cluster, big: Path, name: str, after_body: bool) -> list[object]:
    """Send ``big`` to replica 0 and SIGKILL it mid-body (or just after the body)."""
    writer = cluster.servers[0]
    paused, resume, sent_all = threading.Event(), threading.Event(), threading.Event()
    pause_after = big.stat().st_size - CHUNK if after_body else 30 * CHUNK
    outcome: list[object] = []

    def send() -> None:
        try:
            outcome.append(httpx.post(
                f"{writer.url}/models", timeout=600,
                content=body(big, name, pause_after, paused, resume, sent_all),
                headers={**writer.auth, "content-type": f"multipart/form-data; boundary={BOUNDARY}"}))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    assert paused.wait(300), "the upload never got going"
    if after_body:
        resume.set()
        assert sent_all.wait(300), "the rest of the body was never taken"
    else:
        time.sleep(1.0)  # the server has the head of the body; the tail is held back
    writer.kill()
    resume.set()
    sender.join(300)
    return outcome


@pytest.mark.parametrize("after_body", [False, True], ids=["mid-body", "after-body"])
def test_kill_9_of_the_writing_replica_during_a_100_mb_upload(cluster, archives, after_body):
    small, big = archives
    name = "crash-after" if after_body else "crash-mid"
    r = cluster.servers[0].upload(name, small)
    assert r.status_code == 201, r.text
    for server in cluster.servers:  # version 1 everywhere before the crash
        assert httpx.post(f"{server.url}/models/{name}/versions/1/predict", json=X,
                          timeout=120).status_code == 200

    watcher = Watcher(cluster.servers[1:], name)
    watcher.start()
    try:
        outcome = crash_upload(cluster, big, name, after_body)
        time.sleep(3 * cluster.sync_s + 1)  # the survivors sync a few times after the kill
    finally:
        watcher.stop.set()
        watcher.join(300)
    assert not watcher.violations, watcher.violations[:5]
    assert watcher.polls > 0
    if not after_body:
        assert isinstance(outcome[0], httpx.HTTPError)  # the upload died with the server

    cluster.servers[0].start()
    deadline = time.monotonic() + 180
    while True:
        seen = [listing(s.url) for s in cluster.servers]
        if all(x == seen[0] for x in seen):
            break
        assert time.monotonic() < deadline, f"the replicas never agreed: {seen}"
        time.sleep(0.2)
    versions = seen[0][name]
    # mid-body nothing was committed; after the body the version is everywhere or nowhere
    assert versions == [1] if not after_body else versions in ([1], [1, 2]), versions
    for server in cluster.servers:
        for version in versions:
            r = httpx.post(f"{server.url}/models/{name}/versions/{version}/predict", json=X, timeout=120)
            assert r.status_code == 200, (server.url, version, r.text[:200])
        assert httpx.get(f"{server.url}/ready", timeout=30).status_code == 200
        assert metric(server.url, "scriptserve_store_versions_failed") == 0
    assert staging_leftovers(cluster, 0) == []  # the restart removed the half upload
    print(f"{cluster.kind} {'after' if after_body else 'mid'}-body: {watcher.polls} polls of 2 replicas, "
          f"{len(watcher.checked)} listed versions predicted 200; after restart all list {versions}")
