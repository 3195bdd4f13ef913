"""What a store backend must do: write-once records, whole-object reads, immutable blobs.

The commit protocol (``app.store.store``) needs only these primitives, so a shared POSIX
volume and S3-compatible object storage give the same guarantees:

- ``create(key, data)`` writes a record only if no record has that key (filesystem: a temp
  file, fsync, ``link()``; S3: ``PUT`` with ``If-None-Match: *``) and says whether it did;
- ``get(key)`` reads a whole record, or None; a record is never seen half-written;
- ``keys(prefix)`` lists keys; the store never relies on it alone to find a version a client
  names (it reads that version's key directly);
- blobs are content-addressed (sha256) and verified whenever they are read.

Only operation records are ever overwritten (``put``); nothing that says what is served is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from app.errors import ScriptServeError


class StoreUnavailableError(ScriptServeError):
    """The store could not be reached or answered with an error after retries: a 503."""

    status_code = 503
    code = "store_unavailable"


class Backend(Protocol):
    description: str
    """Where the store is, for logs and ``/ready`` (no secrets)."""

    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` unless the key exists; True if this call wrote it."""

    def put(self, key: str, data: bytes) -> None:
        """Write or replace ``key`` (operation records only)."""

    def get(self, key: str) -> bytes | None:
        """The whole record at ``key``, or None."""

    def keys(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix`` (a folder-like prefix ending in ``/``)."""

    def delete(self, key: str) -> None:
        """Remove ``key`` if present (garbage collection only)."""

    def put_blob(self, digest: str, source: Path) -> None:
        """Store ``source`` as the blob ``digest`` (its sha256); a no-op if it exists."""

    def blob_path(self, digest: str) -> Path:
        """A local file holding blob ``digest``, verified against it; FileNotFoundError if absent."""

    def delete_blob(self, digest: str) -> None:
        """Remove a blob (garbage collection only)."""

    def blobs(self) -> list[str]:
        """Digests of every stored blob."""

    def scratch(self) -> Path:
        """A local folder for uploads in progress (on the same filesystem as blobs, if any)."""
