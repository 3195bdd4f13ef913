"""Hostile archives, crafted at test time: edited TorchScript sources and hand-made zips.

A scripted module cannot call ``torch.save``, so the op archives are real archives of a
tiny module whose ``code/__torch__.py`` (and ``data.pkl``) are edited inside the zip: torch
loads and runs them exactly as written (the tests of ``app.intake.screening`` show that it does).
Zips with lying headers (50 GB declared, symlinks, encryption flags, overlapping entries)
are written byte by byte, so nothing large is ever written to disk.
"""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class Plus(nn.Module):
    """The module every crafted archive starts from: ``x + 1``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


class ReadsFile(nn.Module):
    """Scriptable as is: ``torch.from_file`` reads any file the server can read."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_file("/etc/hostname", size=1, dtype=torch.uint8).float().sum()


FORWARD = "    return torch.add(x, 1)\n"
# data.pkl for a module whose __setstate__ takes a bool: GLOBAL, NEWOBJ, True, BUILD.
# MODULE stands for the TorchScript module path of Plus (from where this file lives).
SETSTATE_PKL = b"\x80\x02cMODULE\nPlus\nq\x00)\x81\x88b."


def base_archive(folder: Path) -> Path:
    path = folder / "plus.torchscript"
    if not path.exists():
        torch.jit.script(Plus()).save(str(path))
    return path


def edit(
    source: Path,
    out: Path,
    code: Callable[[str], str] | None = None,
    data_pkl: bytes | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Copy a torch archive, editing the source of ``Plus`` and ``data.pkl``, adding entries.

    In ``code``'s result and in ``data_pkl``, ``MODULE`` becomes Plus's TorchScript module.
    """
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w") as zout:
        prefix = zin.namelist()[0].split("/", 1)[0]
        source_name = next(n for n in zin.namelist()
                           if n.endswith(".py") and b"class Plus" in zin.read(n))
        module = source_name[len(prefix) + len("/code/"):-len(".py")].replace("/", ".")
        for info in zin.infolist():
            if info.filename.endswith(".debug_pkl"):
                continue  # source ranges of the original code; torch treats them as optional
            data = zin.read(info.filename)
            if code is not None and info.filename == source_name:
                data = code(data.decode()).replace("MODULE", module).encode()
            if data_pkl is not None and info.filename == f"{prefix}/data.pkl":
                data = data_pkl.replace(b"MODULE", module.encode())
            zout.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            zout.writestr(f"{prefix}/{name}", data)
    return out


def in_forward(statements: str) -> Callable[[str], str]:
    """Insert statements (4-space indented lines) at the top of ``forward``'s body."""
    return lambda text: text.replace(FORWARD, statements + FORWARD)


def with_setstate(body: str) -> Callable[[str], str]:
    """Add ``__getstate__`` / ``__setstate__``; ``body`` runs inside ``__setstate__`` at load."""
    methods = (
        "  def __getstate__(self: MODULE.Plus) -> bool:\n"
        "    return self.training\n"
        "  def __setstate__(self: MODULE.Plus, state: bool) -> NoneType:\n"
        f"{body}"
        "    self.training = state\n"
        "    return None\n"
    )
    return lambda text: text.replace("  def forward", methods + "  def forward")


# hand-made zips ------------------------------------------------------------------------------
@dataclass
class Entry:
    name: str
    data: bytes = b""
    deflate: bool = False
    declared_size: int | None = None  # uncompressed size to claim instead of the real one
    mode: int | None = None  # unix mode in external_attr (e.g. a symlink)
    flags: int = 0
    offset_of: int | None = None  # point the directory at another entry's local header


def raw_zip(path: Path, entries: list[Entry]) -> Path:
    """Write a zip byte by byte (zip64 sizes where declared_size needs them)."""
    body = bytearray()
    directory = bytearray()
    offsets: list[int] = []
    for entry in entries:
        name = entry.name.encode()
        payload = entry.data
        if entry.deflate:
            packer = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = packer.compress(entry.data) + packer.flush()
        size = entry.declared_size if entry.declared_size is not None else len(entry.data)
        crc = zlib.crc32(entry.data)
        method = 8 if entry.deflate else 0
        zip64 = size >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, len(payload)) if zip64 else b""
        small = 0xFFFFFFFF if zip64 else size
        small_c = 0xFFFFFFFF if zip64 else len(payload)
        offset = len(body) if entry.offset_of is None else offsets[entry.offset_of]
        offsets.append(offset)
        if entry.offset_of is None:
            body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, entry.flags, method, 0, 0x21,
                                crc, small_c, small, len(name), len(extra))
            body += name + extra + payload
        attr = (entry.mode << 16) if entry.mode is not None else 0
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x031E, 45, entry.flags,
                                 method, 0, 0x21, crc, small_c, small, len(name), len(extra),
                                 0, 0, 0, attr, offset)
        directory += name + extra
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries),
                      len(directory), len(body), 0)
    path.write_bytes(bytes(body + directory + end))
    return path


def torchscript_entries(prefix: str = "m") -> list[Entry]:
    """The minimum a TorchScript archive has (contents irrelevant to structural checks)."""
    return [
        Entry(f"{prefix}/data.pkl", b"\x80\x02."),
        Entry(f"{prefix}/code/__torch__.py", b""),
        Entry(f"{prefix}/constants.pkl", b"\x80\x02)."),
        Entry(f"{prefix}/version", b"3\n"),
    ]


def zip_bomb(path: Path, declared: int = 50 * 10**9) -> Path:
    """A small zip whose directory declares ``declared`` bytes of tensor data."""
    return raw_zip(path, torchscript_entries() + [
        Entry("m/data/0", b"\0" * 65536, deflate=True, declared_size=declared)])


def ratio_bomb(path: Path) -> Path:
    """Honest sizes, but 8 MiB of zeros deflated about 1000:1."""
    return raw_zip(path, torchscript_entries() + [Entry("m/data/0", b"\0" * (8 << 20), deflate=True)])


SYMLINK = stat.S_IFLNK | 0o777
