"""The commit protocol on S3 (a real moto server): write-once records with If-None-Match,
auto-numbering races, conflicts, tombstones, pins, blobs verified through the local cache."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app.config import Settings
from app.errors import ConflictError, NotFoundError
from app.store import ModelStore, open_store
from app.store.backend import StoreUnavailableError
from app.store.files import sha256_of
from app.store.s3 import S3Backend, parse_url
from tests.support.s3 import MotoS3, free_port, moto_s3  # noqa: F401 - the fixture

pytest.importorskip("boto3")


def s3_store(url: str, cache: Path) -> ModelStore:
    store = open_store(Settings(model_store=url, store_cache_dir=cache, store_timeout_s=5))
    store.prepare()
    return store


@pytest.fixture
def url(moto_s3: MotoS3) -> str:  # noqa: F811
    return f"s3://{moto_s3.new_bucket()}/team/store"


def staged(store: ModelStore, payload: bytes = b"archive") -> Path:
    folder = store.new_staging_dir()
    (folder / "model.torchscript").write_bytes(payload)
    return folder


def test_urls_and_settings():
    assert parse_url("s3://b/p/q/") == ("b", "p/q/") and parse_url("s3://b") == ("b", "")
    assert Settings(model_store="s3://b/p").store_is_s3
    assert Settings(model_store="./here").model_store == Path("./here")  # local paths unchanged
    with pytest.raises(ValueError):
        parse_url("s3:///p")


def test_create_is_write_once(url, tmp_path, moto_s3):  # noqa: F811
    backend = S3Backend(url, tmp_path)
    assert backend.create("models/m/versions/1.json", b"first") is True
    assert backend.create("models/m/versions/1.json", b"second") is False
    assert backend.get("models/m/versions/1.json") == b"first"
    assert backend.get("models/m/versions/2.json") is None
    assert backend.keys("models/") == ["models/m/versions/1.json"]
    bucket, prefix = parse_url(url)
    assert moto_s3.client().get_object(Bucket=bucket, Key=prefix + "models/m/versions/1.json")[
        "Body"].read() == b"first"


def test_commit_numbers_conflicts_and_the_cache(url, tmp_path):
    store = s3_store(url, tmp_path / "cache")
    stored = store.commit(staged(store), "m", None, {"k": "v"})
    assert (stored.version, stored.archive.read_bytes()) == (1, b"archive")
    assert stored.archive.parent.is_relative_to(tmp_path / "cache")
    assert [store.commit(staged(store, bytes([i])), "m", None, {}).version for i in range(2)] == [2, 3]
    assert store.commit(staged(store), "m", 7, {}).version == 7
    with pytest.raises(ConflictError, match="already exists"):
        store.commit(staged(store, b"two"), "m", 7, {})
    other = s3_store(url, tmp_path / "other-cache")  # a second server: its own empty cache
    assert other.versions("m") == [1, 2, 3, 7]
    assert other.read("m", 1).archive.read_bytes() == b"archive"
    assert list((tmp_path / "cache").rglob("*.tmp")) == []


def test_two_servers_committing_at_once_get_distinct_versions(url, tmp_path):
    stores = [s3_store(url, tmp_path / "a"), s3_store(url, tmp_path / "b")]
    got: list[int] = []
    lock = threading.Lock()

    def upload(store: ModelStore, i: int) -> None:
        v = store.commit(staged(store, str(i).encode()), "m", None, {"i": i}).version
        with lock:
            got.append(v)

    threads = [threading.Thread(target=upload, args=(stores[i % 2], i)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == list(range(1, 13))
    assert {stores[0].read("m", v).meta["i"] for v in got} == set(range(12))


def test_tombstones_and_pins(url, tmp_path):
    store = s3_store(url, tmp_path)
    store.commit(staged(store, b"1"), "m", None, {})
    store.commit(staged(store, b"2"), "m", None, {})
    store.delete("m", 2)
    assert store.versions("m") == [1] and store.lookup("m", 2) is None
    with pytest.raises(ConflictError, match="not reused"):
        store.commit(staged(store), "m", 2, {})
    assert store.commit(staged(store), "m", None, {}).version == 3
    first = store.write_pin("m", 3)
    assert s3_store(url, tmp_path / "x").read_pin("m") == 3
    assert store.write_pin("m", None) == first + 1
    store.delete("m", 1)
    store.delete("m", 3)
    assert store.names() == []
    with pytest.raises(NotFoundError):
        store.delete("m", 1)


def test_a_damaged_cache_entry_is_fetched_again_and_a_damaged_object_refused(url, tmp_path, moto_s3):  # noqa: F811
    store = s3_store(url, tmp_path / "cache")
    stored = store.commit(staged(store, b"good bytes"), "m", None, {})
    store.read("m", 1)  # in the cache now
    stored.archive.write_bytes(b"tampered")
    assert store.read("m", 1).archive.read_bytes() == b"good bytes"  # re-downloaded, verified
    bucket, prefix = parse_url(url)
    moto_s3.client().put_object(Bucket=bucket, Key=f"{prefix}blobs/{stored.digest}", Body=b"evil")
    fresh = s3_store(url, tmp_path / "fresh")
    with pytest.raises(OSError, match="does not match its sha256"):
        fresh.read("m", 1)
    assert not (tmp_path / "fresh").joinpath(stored.digest).exists()


def test_garbage_collection_removes_unused_blobs(url, tmp_path):
    store = s3_store(url, tmp_path)
    a = store.commit(staged(store, b"same"), "m", None, {})
    store.commit(staged(store, b"same"), "n", None, {})
    b = store.commit(staged(store, b"other"), "m", None, {})
    store.delete("m", 1)
    store.delete("m", 2)
    assert store.collect_garbage(grace_s=-1) == [b.digest]
    assert store.backend.blobs() == [a.digest]
    assert sha256_of(store.read("n", 1).archive) == a.digest


def test_an_unreachable_store_is_store_unavailable_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = open_store(Settings(model_store="s3://nowhere/p", store_cache_dir=tmp_path, store_timeout_s=1))
    with pytest.raises(StoreUnavailableError, match="unreachable") as err:
        store.versions("m")
    assert (err.value.status_code, err.value.code) == (503, "store_unavailable")
