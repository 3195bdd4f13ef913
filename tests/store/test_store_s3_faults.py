"""The S3 store through a fault-injecting proxy in front of a real moto server: transient 5xx
and timeouts are retried, 412/409 races on the conditional PUT pick the next number or ask
again, stale listings lose nothing, and a store that stays down is ``store_unavailable``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.errors import ConflictError
from app.store import ModelStore, open_store
from app.store.backend import StoreUnavailableError
from tests.support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture
from tests.support.s3proxy import FaultProxy, conditional_put

pytest.importorskip("boto3")


@pytest.fixture
def proxy(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:  # noqa: F811
    p = FaultProxy(moto_s3.endpoint).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", p.endpoint)  # the store reaches S3 only through it
    yield p
    p.stop()


@pytest.fixture
def url(moto_s3: MotoS3) -> str:  # noqa: F811
    return f"s3://{moto_s3.new_bucket()}/faults"


def s3_store(url: str, cache: Path, timeout_s: float = 5) -> ModelStore:
    store = open_store(Settings(model_store=url, store_cache_dir=cache, store_timeout_s=timeout_s))
    store.prepare()
    return store


def commit(store: ModelStore, payload: bytes, version: int | None = None) -> int:
    folder = store.new_staging_dir()
    (folder / "model.torchscript").write_bytes(payload)
    return store.commit(folder, "m", version, {}).version


def test_transient_5xx_are_retried_and_nothing_is_lost(proxy, url, tmp_path):
    store = s3_store(url, tmp_path / "a")
    for status, code in [(503, "ServiceUnavailable"), (500, "InternalError"), (503, "SlowDown")]:
        proxy.fail(3, status, code)  # botocore makes 4 attempts: the 4th goes through
        commit(store, code.encode())
    assert proxy.injected["503"] + proxy.injected["500"] == 9
    fresh = s3_store(url, tmp_path / "b")
    assert fresh.versions("m") == [1, 2, 3]
    assert [fresh.read("m", v).archive.read_bytes() for v in (1, 2, 3)] == [
        b"ServiceUnavailable", b"InternalError", b"SlowDown"]
    print(f"transient faults injected and retried: {proxy.injected}")


def test_a_request_that_times_out_is_retried(proxy, url, tmp_path):
    store = s3_store(url, tmp_path, timeout_s=1)
    proxy.stall(2, delay_s=2.5)  # longer than the read timeout, twice
    started = time.monotonic()
    assert commit(store, b"slow") == 1
    print(f"2 stalled requests, committed after {time.monotonic() - started:.1f} s")
    assert s3_store(url, tmp_path / "b").read("m", 1).archive.read_bytes() == b"slow"


def test_a_412_race_takes_the_next_number_and_a_409_asks_again(proxy, url, tmp_path):
    store = s3_store(url, tmp_path)
    proxy.fail(2, 412, "PreconditionFailed", match=conditional_put)  # numbers 1 and 2 "taken"
    assert commit(store, b"a") == 3
    proxy.fail(3, 409, "ConditionalRequestConflict", match=conditional_put)  # a write in flight
    assert commit(store, b"b") == 4
    proxy.fail(1, 412, "PreconditionFailed", match=conditional_put)
    with pytest.raises(ConflictError, match="already exists"):  # an explicit number: a 409
        commit(store, b"c", version=9)
    assert s3_store(url, tmp_path / "b").versions("m") == [3, 4]


def test_stale_listings_lose_nothing(proxy, url, tmp_path):
    writer, reader = s3_store(url, tmp_path / "w"), s3_store(url, tmp_path / "r")
    assert commit(writer, b"1") == 1
    assert reader.versions("m") == [1]
    proxy.stale_listings = True  # from now on every listing answers what it answered before
    assert commit(writer, b"2") == 2  # the stale listing says 1 is next: 412, then 2
    assert commit(reader, b"3") == 3  # the same from another server
    assert reader.read("m", 2).archive.read_bytes() == b"2"  # read by key, not by listing
    assert proxy.injected["stale-listing"] >= 2
    proxy.stale_listings = False
    assert s3_store(url, tmp_path / "x").versions("m") == [1, 2, 3]


def test_a_store_that_stays_down_is_store_unavailable_and_recovers(proxy, url, tmp_path):
    store = s3_store(url, tmp_path, timeout_s=1)
    assert commit(store, b"before") == 1
    proxy.down()
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="unreachable") as err:
        commit(store, b"during")
    assert (err.value.status_code, err.value.code) == (503, "store_unavailable")
    with pytest.raises(StoreUnavailableError):
        store.versions("m")
    print(f"store down: store_unavailable after {time.monotonic() - started:.1f} s "
          f"({proxy.injected['down']} requests refused)")
    proxy.up()
    assert commit(store, b"after") == 2
    fresh = s3_store(url, tmp_path / "b")
    assert fresh.versions("m") == [1, 2]
    assert fresh.read("m", 2).archive.read_bytes() == b"after"
