"""Three servers on one shared store behind haproxy: an upload or a deletion through any of
them reaches all; a client reads its own write on every replica at once; nothing fails
while versions change under load."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import fakes
from tests.support.api import TOKEN
from tests.support.cluster import Cluster, haproxy_available
from tests.support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not haproxy_available(), reason="haproxy is not installed (apt install haproxy)"),
]
X = {"inputs": [[0.25] * 320]}
SYNC_S = 1.0


@pytest.fixture(scope="module", params=["files", "s3"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The same replicas on a shared directory, then on S3 (a moto server on 127.0.0.1)."""
    root = tmp_path_factory.mktemp(f"replicas-{request.param}")
    store: Path | str = root / "store"
    if request.param == "s3":
        pytest.importorskip("boto3")
        moto: MotoS3 = request.getfixturevalue("moto_s3")  # sets AWS_*: the replicas inherit them
        store = f"s3://{moto.new_bucket()}/replicas"
    with Cluster(store, TOKEN, count=3, sync_s=SYNC_S, workdir=root,
                 SCRIPTSERVE_REQUEST_TIMEOUT_S="600") as c:
        yield c


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fakes.save("classifier", tmp_path_factory.mktemp("replica-archives"))


def upload(url: str, archive: Path, name: str, **fields: str) -> httpx.Response:
    with open(archive, "rb") as fh:
        return httpx.post(f"{url}/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300,
                          data={"name": name, **fields}, files={"file": (archive.name, fh)})


def predict(url: str, name: str, version: int | None = None) -> httpx.Response:
    path = f"/models/{name}/predict" if version is None else f"/models/{name}/versions/{version}/predict"
    return httpx.post(url + path, json=X, timeout=600)


def test_an_upload_through_the_balancer_is_read_at_once_on_every_replica(cluster, archive):
    r = upload(cluster.url, archive, "ryw")
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    for server in cluster.servers:  # the version number the upload returned: read your write
        answer = predict(server.url, "ryw", version)
        assert answer.status_code == 200, (server.url, answer.text)
        assert answer.json()["version"] == version


def test_every_replica_converges_within_the_sync_interval(cluster, archive):
    """Without naming the version: each replica learns of it from its own poll."""
    seconds = []
    for round_ in range(3):
        r = upload(cluster.servers[round_ % 3].url, archive, "conv")
        assert r.status_code == 201, r.text
        committed, version = time.monotonic(), r.json()["version"]
        for server in cluster.servers:
            deadline = committed + 120
            while time.monotonic() < deadline:
                info = httpx.get(f"{server.url}/models", timeout=10).json()["models"]
                if any(m["name"] == "conv" and version in m["versions"] for m in info):
                    break
                time.sleep(0.02)
            else:
                raise AssertionError(f"{server.url} never served conv version {version}")
            seconds.append(time.monotonic() - committed)
    print(f"{cluster.kind}: convergence over {len(seconds)} replica-uploads: "
          f"p50 {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s "
          f"(sync every {SYNC_S} s +-20%, plus the load)")


def test_two_uploads_of_one_name_through_two_replicas_get_distinct_versions(cluster, archive):
    results: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda s=s: results.append(upload(s.url, archive, "race")))
               for s in cluster.servers[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 201 for r in results), [r.text for r in results]
    versions = sorted(r.json()["version"] for r in results)
    assert versions == [1, 2]
    for server in cluster.servers:
        for version in versions:
            assert predict(server.url, "race", version).status_code == 200
    # an explicit number another replica took is a 409 everywhere
    r = upload(cluster.servers[2].url, archive, "race", version="2")
    assert r.status_code == 409 and "already exists" in r.text


def test_a_deletion_through_one_replica_reaches_all(cluster, archive):
    r = upload(cluster.url, archive, "gone")
    version = r.json()["version"]
    for server in cluster.servers:
        assert predict(server.url, "gone", version).status_code == 200
    r = httpx.delete(f"{cluster.servers[1].url}/models/gone", headers=cluster.auth, timeout=600)
    assert r.status_code == 200, r.text
    for server in cluster.servers:
        deadline = time.monotonic() + 120
        while predict(server.url, "gone", version).status_code != 404:
            assert time.monotonic() < deadline, f"{server.url} still serves a deleted version"
            time.sleep(0.05)


def test_versions_change_under_load_through_the_balancer_with_zero_failures(cluster, archive):
    """32 clients through haproxy for a bounded time, while a new version is uploaded through
    one replica and the old one deleted through another."""
    assert upload(cluster.url, archive, "live").status_code == 201
    answers: list[tuple[int, int | None]] = []

    async def client(http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set() and len(answers) < 50_000:
            r = await http.post("/models/live/predict", json=X)
            answers.append((r.status_code, r.json().get("version") if r.status_code == 200 else None))

    async def main() -> None:
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=cluster.url, timeout=600, limits=limits) as http:
            tasks = [asyncio.create_task(client(http, stop)) for _ in range(32)]
            await asyncio.sleep(2)
            new = await asyncio.to_thread(upload, cluster.servers[0].url, archive, "live")
            assert new.status_code == 201, new.text
            old = await asyncio.to_thread(
                httpx.delete, f"{cluster.servers[2].url}/models/live/versions/1",
                headers=cluster.auth, timeout=600)
            assert old.status_code == 200, old.text
            await asyncio.sleep(3 * SYNC_S + 2)
            stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(asyncio.wait_for(main(), 600))
    failed = [a for a in answers if a[0] != 200]
    assert not failed, failed[:5]
    assert {v for _, v in answers} == {1, 2}
    assert answers[-1][1] == 2
    print(f"{cluster.kind}: {len(answers)} requests through haproxy while versions changed: 0 failed")
