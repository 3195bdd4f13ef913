"""The model store: the source of truth for every server (``store``: the commit protocol;
``backend``: what a backend must do; ``files``: POSIX filesystems; ``legacy``: the old layout;
``operations``: upload operation records)."""

from app.config import Settings
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
    "open_store", "validate_name",
]


def open_store(settings: Settings) -> ModelStore:
    """The store ``settings.model_store`` names: a directory, or ``s3://bucket/prefix``."""
    if isinstance(settings.model_store, str):
        from app.store.s3 import S3Backend

        backend = S3Backend(settings.model_store, settings.store_cache_dir, settings.store_timeout_s)
        return ModelStore(backend.cache, backend)
    return ModelStore(settings.model_store)
