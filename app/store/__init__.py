"""The model store: committed versions that survive restarts (``filesystem``: the on-disk layout)."""

from app.store.filesystem import (
    ARCHIVE_FILE,
    META_FILE,
    NAME_PATTERN,
    ModelStore,
    StoredVersion,
    fsync_path,
    validate_name,
)

__all__ = [
    "ARCHIVE_FILE", "META_FILE", "NAME_PATTERN", "ModelStore", "StoredVersion", "fsync_path",
    "validate_name",
]
