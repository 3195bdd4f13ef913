"""Zip structure and limits before torch sees an upload (app.intake.archive)."""

from __future__ import annotations

import os

import pytest

from app.errors import InvalidArchiveError, PayloadTooLargeError, UnsafeArchiveError
from app.intake.archive import ZipLimits, check_entry_name, inspect_zip
from tests.support import hostile
from tests.support.hostile import Entry, raw_zip, torchscript_entries


def test_a_well_formed_hand_made_archive_passes(tmp_path):
    info = inspect_zip(raw_zip(tmp_path / "ok.zip", torchscript_entries()))
    assert info.kind == "torchscript" and info.prefix == "m"


def test_zip_bomb_declaring_50_gb_is_413_without_inflating(tmp_path):
    path = hostile.zip_bomb(tmp_path / "bomb.zip")
    assert os.path.getsize(path) < 10_000
    with pytest.raises(PayloadTooLargeError) as info:
        inspect_zip(path)
    assert "declares 5000000" in info.value.message


def test_compression_ratio_over_limit_is_refused(tmp_path):
    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        inspect_zip(hostile.ratio_bomb(tmp_path / "ratio.zip"))
    # the same archive is fine when the operator allows the ratio
    inspect_zip(hostile.ratio_bomb(tmp_path / "ratio2.zip"), ZipLimits(max_compression_ratio=1e6))


@pytest.mark.parametrize(("name", "why"), [
    ("m/../../etc/cron.d/x", "'..'"),
    ("/etc/passwd", "absolute"),
    ("m/code/../../x.py", "'..'"),
    ("C:/windows/x", "absolute"),
    ("m\\..\\x", "backslash"),
    ("m/a\x00b", "control character"),
    ("m//x", "empty part"),
])
def test_traversal_and_odd_names_are_refused(tmp_path, name, why):
    path = raw_zip(tmp_path / "names.zip", torchscript_entries() + [Entry(name, b"x")])
    with pytest.raises(UnsafeArchiveError, match=why):
        inspect_zip(path)


def test_symlink_entry_is_refused(tmp_path):
    path = raw_zip(tmp_path / "link.zip", torchscript_entries() + [
        Entry("m/extra/link", b"/etc/passwd", mode=hostile.SYMLINK)])
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        inspect_zip(path)


def test_encrypted_entry_is_refused(tmp_path):
    path = raw_zip(tmp_path / "enc.zip", torchscript_entries() + [Entry("m/data/0", b"x", flags=1)])
    with pytest.raises(UnsafeArchiveError, match="encrypted"):
        inspect_zip(path)


def test_duplicate_names_are_refused(tmp_path):
    path = raw_zip(tmp_path / "dup.zip", torchscript_entries() + [Entry("m/data.pkl", b"\x80\x02.")])
    with pytest.raises(UnsafeArchiveError, match="more than once"):
        inspect_zip(path)


def test_overlapping_entries_are_refused(tmp_path):
    entries = torchscript_entries() + [Entry("m/data/0", b"\0" * 4096), Entry("m/data/1", offset_of=4)]
    entries[-1].data = b"\0" * 4096
    with pytest.raises(UnsafeArchiveError, match="overlaps"):
        inspect_zip(raw_zip(tmp_path / "overlap.zip", entries))


def test_too_many_entries_are_refused(tmp_path):
    entries = torchscript_entries() + [Entry(f"m/data/{i}") for i in range(40)]
    path = raw_zip(tmp_path / "many.zip", entries)
    with pytest.raises(UnsafeArchiveError, match="44 entries"):
        inspect_zip(path, ZipLimits(max_entries=20))


def test_nested_archive_by_name_is_refused(tmp_path):
    path = raw_zip(tmp_path / "nested.zip", torchscript_entries() + [Entry("m/extra/inner.zip")])
    with pytest.raises(UnsafeArchiveError, match="nested archive"):
        inspect_zip(path)


def test_layouts_that_are_not_torchscript_are_400(tmp_path):
    (tmp_path / "random.bin").write_bytes(os.urandom(4096))
    with pytest.raises(InvalidArchiveError):
        inspect_zip(tmp_path / "random.bin")
    for entries in ([Entry("data.pkl")], [Entry("a/data.pkl"), Entry("b/x")], [Entry("m/x")]):
        with pytest.raises(InvalidArchiveError):
            inspect_zip(raw_zip(tmp_path / "layout.zip", entries))


def test_truncated_archive_is_400(tmp_path, archives):
    data = archives["classifier"].read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30):
        (tmp_path / "cut.zip").write_bytes(data[:cut])
        with pytest.raises(InvalidArchiveError):
            inspect_zip(tmp_path / "cut.zip")


def test_entry_names():
    assert check_entry_name("m/code/__torch__.py") is None
    assert check_entry_name("m/.data/version") is None
    assert check_entry_name("m/./x")
