"""Object storage: one interface (``ObjectStore``), backends chosen from the settings."""

from __future__ import annotations

from ..settings import Settings
from .base import (
    AlreadyExists,
    LowOnSpace,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StorageError,
    StoredObject,
    TransientStorageError,
)
from .conditional_probe import ConditionalWriteGate, ConditionalWritesIgnored, prove_conditional_writes
from .local import LocalStore
from .memory import MemoryStore
from .retrying import RetryingStore
from .s3 import S3Store

__all__ = [
    "AlreadyExists",
    "ConditionalWriteGate",
    "ConditionalWritesIgnored",
    "LocalStore",
    "LowOnSpace",
    "MemoryStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "RetryingStore",
    "S3Store",
    "StorageError",
    "StoredObject",
    "TransientStorageError",
    "open_store",
    "prove_conditional_writes",
]


def open_store(settings: Settings) -> ObjectStore:
    """The backend the settings select: S3-compatible when configured, else the local folder."""
    if settings.storage_kind == "s3":
        return S3Store(
            settings.r2_bucket_name,
            endpoint_url=settings.endpoint_url,
            access_key_id=settings.r2_access_key_id,
            secret_access_key=settings.r2_secret_access_key,
            region=settings.s3_region,
            timeout_seconds=settings.storage_timeout_seconds,
        )
    return LocalStore(
        settings.local_storage_dir,
        min_free_bytes=settings.min_free_bytes,
        min_free_inodes=settings.min_free_inodes,
    )
