"""Create an object if its key is free, and tell a taken key from one a racing write left free.

Exactly-once storage of submissions and trials rests on the store's create-if-absent. A refusal
does not always mean the key is taken: S3 answers 409 to a create racing another conditional
write to the same key, and that other write may fail, leaving the key free. So a refusal is
read back before anything is concluded: an object there is what holds the key (the caller
decides whether it is the same upload, a retry); nothing there means try again.
"""

from __future__ import annotations

from .base import ObjectNotFound, ObjectStore, PreconditionFailed, StorageError, StoredObject


class KeyContended(StorageError):
    """Every create of the key was refused, yet nothing was there to read back: try later."""


async def create_once(store: ObjectStore, key: str, body: bytes, *, attempts: int) -> StoredObject | None:
    """Create ``key`` holding ``body`` unless it exists: None when created, else what holds it.

    At most ``attempts`` creates (each refused one followed by a read); raises ``KeyContended``
    when the key stayed free but contended throughout, and ``StorageError`` when the store fails.
    Async: the upload pipeline runs on the event loop and calls the store's async methods.
    """
    for _ in range(attempts):
        try:
            await store.put_async(key, body, if_absent=True)
            return None
        except PreconditionFailed:  # taken, or S3 saw a racing write to it
            try:
                return await store.get_async(key)
            except ObjectNotFound:
                continue
    raise KeyContended(f"{key}: every create was refused, yet nothing is stored there")
