"""The store on a POSIX filesystem: local disk, or a volume shared by several servers (NFS,
EFS, a ReadWriteMany PVC). Records are written once with ``link()``, which fails with EEXIST
when the name is taken, on every POSIX filesystem including NFS; blobs the same way."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

BLOBS = "blobs"
SCRATCH = ".staging"


def fsync_path(path: Path) -> None:
    """Flush a file or directory entry to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileBackend:
    """Records and blobs as files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"file:{self.root}"

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad store key {key!r}")
        return self.root / key

    def _temp_beside(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"

    def _write_temp(self, target: Path, data: bytes) -> Path:
        temp = self._temp_beside(target)
        with open(temp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return temp

    def create(self, key: str, data: bytes) -> bool:
        target = self._path(key)
        temp = self._write_temp(target, data)
        try:
            os.link(temp, target)
        except FileExistsError:
            return False
        finally:
            temp.unlink(missing_ok=True)
        fsync_path(target.parent)
        return True

    def put(self, key: str, data: bytes) -> None:
        target = self._path(key)
        os.replace(self._write_temp(target, data), target)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def keys(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        found: list[str] = []
        for folder, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = Path(folder).relative_to(self.root).as_posix()
            found += [f"{rel}/{f}" if rel != "." else f for f in files if not f.startswith(".")]
        return sorted(found)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _blob(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"bad blob digest {digest!r}")
        return self.root / BLOBS / digest

    def put_blob(self, digest: str, source: Path) -> None:
        target = self._blob(digest)
        if target.exists():
            return
        temp = self._temp_beside(target)
        try:
            os.link(source, temp)  # the staging folder is on this filesystem: no copy
        except OSError:
            shutil.copyfile(source, temp)
        try:
            fsync_path(temp)
            os.link(temp, target)
        except FileExistsError:
            pass
        finally:
            temp.unlink(missing_ok=True)
        fsync_path(target.parent)

    def blob_path(self, digest: str) -> Path:
        path = self._blob(digest)
        if not path.is_file():
            raise FileNotFoundError(f"blob {digest[:12]} is missing from the store")
        if sha256_of(path) != digest:
            raise OSError(f"blob {digest[:12]} does not match its sha256: the store is damaged")
        return path

    def delete_blob(self, digest: str) -> None:
        self._blob(digest).unlink(missing_ok=True)

    def blobs(self) -> list[str]:
        folder = self.root / BLOBS
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if len(p.name) == 64)

    def scratch(self) -> Path:
        return self.root / SCRATCH
