"""Stores uploads exactly once: append-only submissions and a newest-wins ``status.json``.

Correctness across collector processes comes from the store's conditional writes, never from
memory in this process:

* a submission is created only if its key is absent; if the key is taken by *the same* upload
  (a retry) its key is returned and nothing is written, otherwise the next suffix is tried;
* ``status.json`` is replaced by compare-and-swap on its ETag, and only by an upload whose
  timestamp is not older than the stored one, so racing writers end at the newest.

Common path: one PUT for a submission, then one GET and one PUT for the status.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import StorageUnavailable
from .keys import KeyLayout, format_timestamp, parse_timestamp
from .models import PRIVATE_STATUS_FIELDS, Upload, without_server_fields
from .storage import ObjectStore, PreconditionFailed, StorageError
from .storage.retrying import shared_deadline

logger = logging.getLogger(__name__)

MAX_SAME_SECOND_SUBMISSIONS = 1000
MAX_STATUS_ATTEMPTS = 200
# Names tried for one submission, plus tries of a name that a racing write (S3 409) left free.
MAX_SUBMISSION_TRIES = 2 * MAX_SAME_SECOND_SUBMISSIONS


@dataclass(frozen=True)
class UploadResult:
    participant_id: str
    timestamp: str
    files_uploaded: list[str]
    status_superseded: bool  # a newer status.json was already stored; this one was not written

    def as_response(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "success",
            "participantId": self.participant_id,
            "timestamp": self.timestamp,
            "filesUploaded": self.files_uploaded,
        }
        if self.status_superseded:
            body["statusSuperseded"] = True
        return body


class UploadService:
    """Writes validated uploads into a store under a key layout."""

    def __init__(
        self,
        store: ObjectStore,
        layout: KeyLayout,
        *,
        retry_after: int = 5,
        deadline_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.layout = layout
        self.retry_after = retry_after
        # One retry deadline for all the storage requests of an upload (see storage.retrying).
        self.deadline_seconds = deadline_seconds
        self._clock = clock

    def store_upload(self, upload: Upload, *, received_at: datetime) -> UploadResult:
        """Store one upload; raises ``StorageUnavailable`` when the store fails past its deadline."""
        stamped = {**upload.document, "serverReceivedAt": format_timestamp(received_at)}
        files: list[str] = []
        deadline = (
            shared_deadline(self.deadline_seconds, self._clock) if self.deadline_seconds else nullcontext()
        )
        try:
            with deadline:
                # The submission goes first: if the status write then fails, the client's retry
                # is recognised as the same submission and only the status is written again.
                submission_key = None
                if upload.upload_type == "submission":
                    submission_key = self._store_submission(upload, stamped)
                status_key = self.layout.status_key(upload.participant_id)
                status_written = self._store_status(status_key, upload, stamped)
        except StorageError as exc:
            logger.warning(
                "⚠️ Storage failed for %s (%s upload): %s",
                upload.participant_id,
                upload.upload_type,
                exc,
            )
            raise StorageUnavailable(
                "storage is unavailable right now; the upload was not stored, please retry",
                retry_after=self.retry_after,
            ) from exc
        if status_written:
            files.append(status_key)
        if submission_key:
            files.append(submission_key)
        logger.info("✅ Uploaded user data for %s: %s", upload.participant_id, files)
        return UploadResult(upload.participant_id, upload.timestamp_text, files, not status_written)

    def _store_submission(self, upload: Upload, stamped: dict[str, Any]) -> str:
        body = _encode(stamped)
        attempt = 1
        for _ in range(MAX_SUBMISSION_TRIES):
            key = self.layout.submission_key(upload.participant_id, upload.moment, attempt)
            try:
                self.store.put(key, body, if_absent=True)
                return key
            except PreconditionFailed:  # the name is taken, or S3 saw a racing write to it
                existing = self.store.get_or_none(key)
                if existing is None:
                    continue  # the racing write did not land: this name is still free
                if _same_upload(existing.body, upload):
                    logger.info("Retried submission for %s recognised: %s", upload.participant_id, key)
                    return key
                attempt += 1
                if attempt > MAX_SAME_SECOND_SUBMISSIONS:
                    break
        raise StorageError(f"could not find a free name for a submission of {upload.participant_id}")

    def _store_status(self, key: str, upload: Upload, stamped: dict[str, Any]) -> bool:
        """Compare-and-swap ``status.json``; False when a newer status is already stored."""
        body = _encode({k: v for k, v in stamped.items() if k != "submissionData"})
        for _ in range(MAX_STATUS_ATTEMPTS):
            current = self.store.get_or_none(key)
            try:
                if current is None:
                    self.store.put(key, body, if_absent=True)
                    return True
                if _stored_moment(current.body) > upload.moment:
                    return False
                self.store.put(key, body, if_match=current.etag)
                return True
            except PreconditionFailed:
                continue  # another writer got there first: look again
        raise StorageError(f"status.json for {upload.participant_id} is too contended")

    def read_status(self, participant_id: str) -> dict[str, Any] | None:
        """The participant's stored status without private fields, or None if there is none."""
        try:
            current = self.store.get_or_none(self.layout.status_key(participant_id))
        except StorageError as exc:
            raise StorageUnavailable(
                "storage is unavailable right now, please retry", retry_after=self.retry_after
            ) from exc
        if current is None:
            return None
        document = json.loads(current.body)
        return {k: v for k, v in document.items() if k not in PRIVATE_STATUS_FIELDS}


def _encode(document: dict[str, Any]) -> bytes:
    # Compact, not indented: Python's C encoder only handles the compact form, which makes this
    # about 5x faster on the upload path and the objects a third smaller. The dashboard and
    # `python -m json.tool` show them formatted.
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _same_upload(stored_body: bytes, upload: Upload) -> bool:
    """Is the stored submission this very upload (a retry)? By uploadId, else by content."""
    try:
        stored = json.loads(stored_body)
    except ValueError:
        return False
    if not isinstance(stored, dict):
        return False
    if upload.upload_id is not None:
        return stored.get("uploadId") == upload.upload_id
    return without_server_fields(stored) == without_server_fields(upload.document)


def _stored_moment(body: bytes) -> datetime:
    """When the stored status was made; an unreadable one counts as oldest, so it gets replaced."""
    try:
        stored = json.loads(body)
        return (
            parse_timestamp(stored.get("timestamp"))
            or parse_timestamp(stored.get("serverReceivedAt"))
            or datetime.min.replace(tzinfo=UTC)
        )
    except (ValueError, AttributeError):
        return datetime.min.replace(tzinfo=UTC)
