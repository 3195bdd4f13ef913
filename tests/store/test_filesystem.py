"""The on-disk store: atomic commit, listing, debris clean-up, deletion."""

from __future__ import annotations

import pytest

from app.errors import BadRequestError, ConflictError, NotFoundError
from app.store import ModelStore, validate_name


def staged(store: ModelStore, payload: bytes = b"archive"):
    folder = store.new_staging_dir()
    (folder / "model.torchscript").write_bytes(payload)
    return folder


def test_commit_publishes_a_complete_version(tmp_path):
    store = ModelStore(tmp_path)
    store.prepare()
    stored = store.commit(staged(store), "m", 1, {"k": "v"})
    assert stored.archive.read_bytes() == b"archive"
    assert store.read("m", 1).meta == {"k": "v"}
    assert store.versions("m") == [1] and store.names() == ["m"]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_commit_refuses_an_existing_version(tmp_path):
    store = ModelStore(tmp_path)
    store.prepare()
    store.commit(staged(store, b"one"), "m", 1, {})
    with pytest.raises(ConflictError):
        store.commit(staged(store, b"two"), "m", 1, {})
    assert store.read("m", 1).archive.read_bytes() == b"one"


def test_prepare_removes_debris_and_ignores_incomplete_versions(tmp_path):
    store = ModelStore(tmp_path)
    store.prepare()
    store.commit(staged(store), "m", 1, {})
    leftover = staged(store)  # a crash mid-upload
    (tmp_path / "m" / "2").mkdir()  # a folder without meta.json is not a version
    store.prepare()
    assert not leftover.exists()
    assert store.versions("m") == [1]


def test_delete_removes_the_version_and_empty_model(tmp_path):
    store = ModelStore(tmp_path)
    store.prepare()
    store.commit(staged(store), "m", 1, {})
    store.commit(staged(store), "m", 2, {})
    store.delete("m", 2)
    assert store.versions("m") == [1]
    store.delete("m", 1)
    assert store.names() == [] and not (tmp_path / "m").exists()
    with pytest.raises(NotFoundError):
        store.delete("m", 1)


@pytest.mark.parametrize("name", ["a", "A1", "resnet-50_v2.1", "x" * 64])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "_x", "a/b", "a\\b", "x" * 65, "a b", "é"])
def test_invalid_names(name):
    with pytest.raises(BadRequestError):
        validate_name(name)
