"""Naming a submission file: the plain name, else one of two names derived from the upload itself.

Two different submissions of one participant in the same second must both survive, and a retry
of the same submission must find its first file rather than make a second. Counting up
(``_2``, ``_3``, ...) made the n-th submission of a second read every earlier one (cost growing
with the square of their number, and a cap that froze the second). Instead the suffix is a short
hash of the upload (its ``uploadId``, else its content), so at most three names are ever tried:

    {id}_Complete_{stamp}.json  ->  {id}_Complete_{stamp}_{h1}.json  ->  {id}_Complete_{stamp}_{h2}.json

Readers still accept the old counter suffixes (``keys.KeyLayout.parse``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from .compact_json import compact_json_bytes
from .keys import KeyLayout
from .models import Upload
from .server_fields import KEY_VERIFIED, without_server_fields
from .storage import ObjectStore, StorageError
from .storage.create_once import KeyContended, create_once

logger = logging.getLogger(__name__)

# Each name may be tried twice: once more when a racing write (S3 409) left it free after all.
TRIES_PER_NAME = 2
_SECOND_SALT = b"same-second-name-2\0"


def name_suffixes(upload: Upload) -> Iterator[str]:
    """The suffixes tried in order: none, then two 8-hex hashes of the upload's identity.

    Lazily: the plain name is nearly always free, and hashing a large upload's content (sorted
    and encoded) is a good part of a submission's CPU when it is not.
    """
    yield ""
    if upload.upload_id is not None:
        identity = upload.upload_id.encode()
    else:
        content = without_server_fields(upload.document)
        identity = compact_json_bytes(content, sort_keys=True)
    yield hashlib.sha256(identity).hexdigest()[:8]
    yield hashlib.sha256(_SECOND_SALT + identity).hexdigest()[:8]


async def store_submission(
    store: ObjectStore,
    layout: KeyLayout,
    upload: Upload,
    stamped: dict[str, Any],
    before_write: Callable[[int], None] | None = None,
) -> str:
    """Create the submission file under the first free name; its key (the earlier one on a retry).

    ``before_write`` is told the body's size before anything is written, and may refuse by raising.
    """
    body = compact_json_bytes(stamped)
    if before_write is not None:
        before_write(len(body))
    for suffix in name_suffixes(upload):
        key = layout.submission_key(upload.participant_id, upload.moment, suffix)
        try:
            existing = await create_once(store, key, body, attempts=TRIES_PER_NAME)
        except KeyContended:
            continue  # racing writes kept the name busy: the next name
        if existing is None:
            return key
        if same_upload(existing.body, upload, stamped.get(KEY_VERIFIED)):
            logger.info("Retried submission for %s recognised: %s", upload.participant_id, key)
            return key
    # Only reachable if two 32-bit hashes of this upload both collide with other uploads'.
    raise StorageError(f"could not find a free name for a submission of {upload.participant_id}")


def same_upload(stored_body: bytes, upload: Upload, key_verified: object = None) -> bool:
    """Is the stored submission this very upload (a retry)? By uploadId, else by content.

    Never when one was stored without the participant's key and the other has it
    (``key_verified``: what this upload stores as ``keyVerified``): a copy sent without the
    key must not pass for the participant's own upload.
    """
    try:
        stored = json.loads(stored_body)
    except ValueError:
        return False
    if not isinstance(stored, dict) or stored.get(KEY_VERIFIED) != key_verified:
        return False
    if upload.upload_id is not None:
        return stored.get("uploadId") == upload.upload_id
    return without_server_fields(stored) == without_server_fields(upload.document)
