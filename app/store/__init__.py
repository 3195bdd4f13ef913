"""The model store: the source of truth for every server (``store``: the commit protocol;
``backend``: what a backend must do; ``files``: POSIX filesystems; ``legacy``: the old layout;
``operations``: upload operation records)."""

from app.store.files import fsync_path
from app.store.store import (
    ARCHIVE_FILE,
    NAME_PATTERN,
    ModelStore,
    StoredVersion,
    StoreState,
    validate_name,
)

__all__ = [
    "ARCHIVE_FILE", "NAME_PATTERN", "ModelStore", "StoreState", "StoredVersion", "fsync_path",
    "validate_name",
]
