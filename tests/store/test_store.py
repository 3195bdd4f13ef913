"""The commit protocol on a filesystem: write-once records, content-addressed blobs,
tombstones, pins, garbage collection, crash debris, and the old layout migrated."""

from __future__ import annotations

import json
import os
import threading

import pytest

from app.errors import BadRequestError, ConflictError, NotFoundError
from app.store import ModelStore, validate_name
from app.store.files import FileBackend, sha256_of


def prepared(root) -> ModelStore:
    store = ModelStore(root)
    store.prepare()
    return store


def staged(store: ModelStore, payload: bytes = b"archive"):
    folder = store.new_staging_dir()
    (folder / "model.torchscript").write_bytes(payload)
    return folder


def test_commit_publishes_a_blob_then_a_record(tmp_path):
    store = prepared(tmp_path)
    stored = store.commit(staged(store), "m", None, {"k": "v"})
    assert (stored.version, stored.archive.read_bytes()) == (1, b"archive")
    record = json.loads((tmp_path / "models/m/versions/1.json").read_text())
    assert record["k"] == "v" and record["sha256"] == sha256_of(stored.archive)
    assert stored.archive == tmp_path / "blobs" / record["sha256"]
    assert store.read("m", 1).meta == record
    assert store.versions("m") == [1] and store.names() == ["m"]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_numbers_come_in_order_and_an_explicit_taken_one_is_409(tmp_path):
    store = prepared(tmp_path)
    assert [store.commit(staged(store, bytes([i])), "m", None, {}).version for i in range(3)] == [1, 2, 3]
    assert store.commit(staged(store), "m", 7, {}).version == 7
    with pytest.raises(ConflictError, match="already exists"):
        store.commit(staged(store, b"two"), "m", 7, {})
    assert store.commit(staged(store), "m", None, {}).version == 8


def test_two_servers_committing_at_once_get_distinct_versions(tmp_path):
    """Two store objects on one folder (two servers on a shared volume), 8 threads each."""
    stores = [prepared(tmp_path), ModelStore(tmp_path)]
    got: list[int] = []
    lock = threading.Lock()

    def upload(store: ModelStore, i: int) -> None:
        v = store.commit(staged(store, str(i).encode()), "m", None, {"i": i}).version
        with lock:
            got.append(v)

    threads = [threading.Thread(target=upload, args=(stores[i % 2], i)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 17))
    assert {store.read("m", v).meta["i"] for v in got for store in stores[:1]} == set(range(16))


def test_a_blob_without_its_record_is_invisible(tmp_path):
    """A crash between the blob and the record leaves nothing half-visible."""
    store = prepared(tmp_path)
    folder = staged(store, b"orphan")
    store.backend.put_blob(sha256_of(folder / "model.torchscript"), folder / "model.torchscript")
    assert store.names() == [] and store.versions("m") == []


def test_a_damaged_blob_is_refused_on_read(tmp_path):
    store = prepared(tmp_path)
    stored = store.commit(staged(store), "m", None, {})
    os.chmod(stored.archive, 0o644)
    stored.archive.write_bytes(b"tampered")
    with pytest.raises(OSError, match="does not match its sha256"):
        store.read("m", 1)


def test_delete_writes_a_tombstone_and_numbers_are_not_reused(tmp_path):
    store = prepared(tmp_path)
    store.commit(staged(store, b"1"), "m", None, {})
    store.commit(staged(store, b"2"), "m", None, {})
    store.delete("m", 2)
    assert store.versions("m") == [1] and store.lookup("m", 2) is None
    assert (tmp_path / "models/m/tombstones/2.json").is_file()
    with pytest.raises(ConflictError, match="was deleted; version numbers are not reused"):
        store.commit(staged(store), "m", 2, {})
    assert store.commit(staged(store), "m", None, {}).version == 3
    store.delete("m", 1)
    store.delete("m", 3)
    assert store.names() == []
    with pytest.raises(NotFoundError):
        store.delete("m", 1)


def test_garbage_collection_waits_for_the_grace_period_and_spares_shared_blobs(tmp_path):
    store = prepared(tmp_path)
    a = store.commit(staged(store, b"same"), "m", None, {})
    store.commit(staged(store, b"same"), "n", None, {})  # the same bytes: one blob
    b = store.commit(staged(store, b"other"), "m", None, {})
    store.delete("m", 1)
    store.delete("m", 2)
    assert store.collect_garbage(grace_s=3600) == []  # too recent
    assert store.collect_garbage(grace_s=-1) == [b.digest]  # a.digest is still used by n
    assert a.archive.exists() and not b.archive.exists()


def test_pins_newest_wins(tmp_path):
    store = prepared(tmp_path)
    for i in range(3):
        store.commit(staged(store, bytes([i])), "m", None, {})
    assert store.read_pin("m") is None
    first = store.write_pin("m", 2)
    assert ModelStore(tmp_path).read_pin("m") == 2
    assert store.write_pin("m", None) == first + 1
    assert store.read_pin("m") is None and store.state().pins["m"] == (first + 1, None)


def test_a_quarantine_holds_until_a_newer_record_lifts_it_and_other_servers_see_it(tmp_path):
    store = prepared(tmp_path)
    for i in range(2):
        store.commit(staged(store, bytes([i])), "m", None, {})
    assert store.state().quarantined == {}
    assert store.write_quarantine("m", 2, "its load hung") == 1
    other = ModelStore(tmp_path)  # another server on the same store
    assert other.state().quarantined == {"m": {2: "its load hung"}}
    assert set(other.state().versions["m"]) == {1, 2}  # still stored: retry or delete decides
    assert store.write_quarantine("m", 2, None) == 2
    assert ModelStore(tmp_path).state().quarantined == {}
    store.write_quarantine("m", 2, "again")
    assert ModelStore(tmp_path).state("m").quarantined == {"m": {2: "again"}}


def test_prepare_removes_abandoned_uploads_only(tmp_path):
    store = prepared(tmp_path)
    mine = store.new_staging_dir()  # this process is alive: an upload in progress
    dead = tmp_path / ".staging" / "otherhost_x-1-0123456789ab"  # elsewhere: not ours to judge
    dead.mkdir()
    gone = tmp_path / ".staging" / f"{mine.name.rsplit('-', 2)[0]}-999999999-0123456789ab"
    gone.mkdir()  # this host, a process that no longer runs
    junk = tmp_path / ".staging" / "deadbeef"
    junk.mkdir()
    ModelStore(tmp_path).prepare()
    assert not gone.exists() and not junk.exists()
    assert dead.exists()


def test_an_old_layout_store_is_moved_over_with_nothing_lost(tmp_path):
    for version, payload in ((1, b"one"), (3, b"three")):
        folder = tmp_path / "clf" / str(version)
        folder.mkdir(parents=True)
        (folder / "model.torchscript").write_bytes(payload)
        (folder / "meta.json").write_text(json.dumps({"name": "clf", "version": version,
                                                      "source": "archive"}))
    (tmp_path / "clf" / "default.json").write_text(json.dumps({"version": 1}))
    (tmp_path / "clf" / "2").mkdir()  # an old incomplete version: not a version
    store = prepared(tmp_path)
    assert store.versions("clf") == [1, 3]
    assert store.read("clf", 3).archive.read_bytes() == b"three"
    assert store.read("clf", 1).meta["source"] == "archive"
    assert store.read_pin("clf") == 1
    assert not (tmp_path / "clf" / "1").exists()
    prepared(tmp_path)  # a second start (or a second server) changes nothing
    assert store.versions("clf") == [1, 3] and store.commit(staged(store), "clf", None, {}).version == 4


def test_keys_cannot_escape_the_root(tmp_path):
    backend = FileBackend(tmp_path)
    for key in ("../x", "/etc/passwd", "models/../../x"):
        with pytest.raises(ValueError):
            backend.get(key)


@pytest.mark.parametrize("name", ["a", "A1", "resnet-50_v2.1", "x" * 64])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "_x", "a/b", "a\\b", "x" * 65, "a b", "é"])
def test_invalid_names(name):
    with pytest.raises(BadRequestError):
        validate_name(name)


def test_unfinished_operations_fail_only_when_their_process_is_gone(tmp_path):
    import socket

    from app.store.operations import OperationLog

    log = OperationLog(FileBackend(tmp_path))
    host = socket.gethostname()
    now = __import__("time").time()
    records = {
        "a" * 32: f"{host}:{os.getpid()}",  # an earlier process with this pid: gone
        "b" * 32: f"{host}:999999999",  # no such process: gone
        "c" * 32: f"{host}:1",  # alive (init): still running
        "d" * 32: "elsewhere:5",  # another machine's
    }
    for op_id, owner in records.items():
        log.write({"id": op_id, "owner": owner, "state": "running", "updated_at": now, "created_at": now})
    log.prepare(host)
    states = {op_id: log.read(op_id)["state"] for op_id in records}
    assert states == {"a" * 32: "failed", "b" * 32: "failed", "c" * 32: "running", "d" * 32: "running"}
    assert log.read("a" * 32)["error"]["code"] == "interrupted"
