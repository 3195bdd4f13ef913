"""A real server on an S3 store behind a fault-injecting proxy: while the store is down it
answers ``/health``, is not ready, and refuses uploads with a clear 503 ``store_unavailable``;
when the store comes back it becomes ready on its own, and transient faults change nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import fakes
from tests.support.api import TOKEN
from tests.support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture
from tests.support.s3proxy import FaultProxy
from tests.support.server import LiveServer

pytestmark = pytest.mark.slow
X = {"inputs": [[0.25] * 320]}


@pytest.fixture
def proxy(moto_s3: MotoS3) -> Iterator[FaultProxy]:  # noqa: F811
    p = FaultProxy(moto_s3.endpoint).start()
    yield p
    p.stop()


def test_a_server_whose_store_is_down_stays_up_unready_and_says_why(moto_s3, proxy, tmp_path):  # noqa: F811
    pytest.importorskip("boto3")
    archive = fakes.save("classifier", tmp_path)
    proxy.down()
    server = LiveServer(f"s3://{moto_s3.new_bucket()}/down", TOKEN, SCRIPTSERVE_STORE_SYNC_S="1",
                        SCRIPTSERVE_STORE_TIMEOUT_S="2", SCRIPTSERVE_STORE_CACHE_DIR=str(tmp_path / "cache"),
                        AWS_ENDPOINT_URL=proxy.endpoint)
    server.log_path = tmp_path / "server.log"
    server.start(wait_ready=False)
    try:
        server.wait("/health")
        time.sleep(1)
        assert httpx.get(server.url + "/ready", timeout=5).status_code == 503
        r = server.upload("m", archive)
        assert r.status_code == 503 and "store_unavailable" in r.text, r.text
        assert server.proc is not None and server.proc.poll() is None  # no crash
        refused = proxy.injected["down"]

        proxy.up()
        started = time.monotonic()
        server.wait("/ready", timeout_s=30)  # the first complete sync, retried with backoff
        print(f"store down: {refused} requests refused, upload 503 store_unavailable; "
              f"ready {time.monotonic() - started:.1f} s after the store came back")
        r = server.upload("m", archive)
        assert r.status_code == 201, r.text
        version = r.json()["version"]

        proxy.fail(3, 503, "SlowDown")  # transient: retried inside one call
        r = server.upload("m", archive)
        assert r.status_code == 201, r.text
        for v in (version, r.json()["version"]):
            answer = httpx.post(f"{server.url}/models/m/versions/{v}/predict", json=X, timeout=60)
            assert answer.status_code == 200, answer.text

        proxy.down()  # down after ready: serving goes on from what is loaded
        time.sleep(2.5)
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
        answer = httpx.post(f"{server.url}/models/m/versions/{version}/predict", json=X, timeout=60)
        assert answer.status_code == 200, answer.text
        r = server.upload("m", archive)
        assert r.status_code == 503 and "store_unavailable" in r.text, r.text
    finally:
        server.stop()
