"""The collector's exceptions, each carrying the HTTP status it maps to (see docs/api.md §2).

    CollectorError                   500  base; never raised directly
    ├── InvalidUpload                400  the request is malformed; retrying will not help
    │   ├── RequestTimeout           408  the body arrived too slowly
    │   ├── PayloadTooLarge          413
    │   ├── UnsupportedMediaType     415
    │   └── UnprocessableUpload      422  well-formed JSON that breaks the contract
    ├── NotAuthenticated             401
    │   └── LoginRequired            401  no dashboard session (pages redirect to the login form)
    ├── Forbidden                    403  refused whoever asks (e.g. a cross-site dashboard form)
    │   ├── ParticipantKeyMismatch   403  wrong/missing participant key; status not changed
    │   ├── StudyClosed              403  the study takes no new participants (reason study-closed)
    │   ├── StudyFull                403  the study's participant cap is reached (reason study-full)
    │   └── OriginRefused            403  a browser page outside the study's origins (reason origin)
    ├── NotFound                     404
    │   └── UnknownStudy             404  no study with that studyId (reason unknown-study)
    ├── ParticipantErased            410  the research team erased this participant
    ├── StudyArchived                410  the study is archived; nothing more is stored
    ├── RateLimited                  429  retry later
    │   └── TooManyBodies            429  too many bodies arriving from the address (closes)
    ├── NotImplementedOnServer       501  this server lacks an optional part (e.g. pyarrow)
    ├── Overloaded                   503  too many uploads in progress; retry later
    └── StorageUnavailable           503  the store failed past its retry deadline; retry later

The research tools' errors (the command line, the dashboard's pages) are here too, below the
tree: they are never answered as JSON; each says what stopped a tool:

    ErasureRefused (ValueError)            an erasure request is wrong; nothing was touched
    ErasureIncomplete (StorageError)       objects keep appearing under the participant
    InvalidStudy (ValueError)              a study definition breaks the rules
    ├── StudyExists                        the study ID is taken
    └── StudyNotRegistered                 no such study
    VerifyFailed                           the bucket could not be walked
    ExportFailed                           an export stopped (storage, or strict and unreadable)
    └── DatasetInvalid                     the dataset written fails the Psych-DS checks
    ExportDependencyMissing (RuntimeError) Parquet asked for, pyarrow not installed
    NotAnExport (ValueError)               a ledger reconcile was given something else

Storage backends raise their own, narrower exceptions (``collector.storage.base``, and
``storage.create_once.KeyContended``, ``storage.conditional_probe.ConditionalWritesIgnored``);
``storage_unavailable`` below is the one place that turns them into ``StorageUnavailable``.
A refusal can also be a value, ``Refusal`` (what the upload pipeline returns); both become the
one JSON error body in ``collector.web.error_handlers``.
``collector.web.error_handlers`` maps all of these to the single JSON error shape, and
``log_refusal`` writes the one warning line every refusal gets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .storage.base import StorageError

logger = logging.getLogger("collector.refusals")


class CollectorError(Exception):
    """Base of every error the collector answers with; ``status`` is the HTTP status code.

    ``retry_after`` (seconds) becomes the ``Retry-After`` header of errors a retry can fix;
    ``closes_connection`` marks errors answered before the body was read to its end.
    """

    status: int = 500
    closes_connection: bool = False
    # A machine-readable word the browser module acts on (sent as "reason"), when one applies.
    reason: str | None = None

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def refusal(cls, message: str, *, retry_after: int | None = None) -> Refusal:
        """This error as a value, without raising it (what ``pipeline.decide`` returns)."""
        return Refusal(cls.status, message, cls.reason, retry_after, cls.closes_connection)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused request as a value: what ``collector.web.error_handlers`` turns into the one
    JSON error body, the same for a single upload and a batch item."""

    status: int
    message: str
    reason: str | None = None
    retry_after: int | None = None
    closes_connection: bool = False

    @classmethod
    def of(cls, error: CollectorError) -> Refusal:
        return cls(error.status, error.message, error.reason, error.retry_after, error.closes_connection)


class InvalidUpload(CollectorError):
    status = 400


class RequestTimeout(InvalidUpload):
    status = 408
    closes_connection = True


class PayloadTooLarge(InvalidUpload):
    status = 413
    closes_connection = True


class UnsupportedMediaType(InvalidUpload):
    status = 415


class UnprocessableUpload(InvalidUpload):
    status = 422


class NotAuthenticated(CollectorError):
    status = 401


class LoginRequired(NotAuthenticated):
    """No valid dashboard session: pages redirect to the login form, everything else answers 401."""


class Forbidden(CollectorError):
    status = 403


class NotFound(CollectorError):
    status = 404


class ParticipantKeyMismatch(Forbidden):
    status = 403
    reason = "participant-key"


class ParticipantErased(CollectorError):
    status = 410
    reason = "erased"


class UnknownStudy(NotFound):
    reason = "unknown-study"


class StudyClosed(Forbidden):
    reason = "study-closed"


class StudyFull(Forbidden):
    reason = "study-full"


class OriginRefused(Forbidden):
    reason = "origin"


class StudyArchived(CollectorError):
    status = 410
    reason = "study-archived"


class RateLimited(CollectorError):
    status = 429


class TooManyBodies(RateLimited):
    """Refused before the body was read (too many still arriving from the address): close."""

    closes_connection = True


class NotImplementedOnServer(CollectorError):
    """The request is fine but this installation lacks what it needs (the operator can add it)."""

    status = 501


class Overloaded(CollectorError):
    status = 503


class StorageUnavailable(CollectorError):
    status = 503


# --- The research tools' errors (never answered as JSON) ------------------------------------------


class ErasureRefused(ValueError):
    """The erasure request itself is wrong (participant ID, empty reason): nothing was touched."""


class ErasureIncomplete(StorageError):
    """Objects keep appearing under the participant; run the erasure again."""


class InvalidStudy(ValueError):
    """A study definition (from the command line, the dashboard or the bucket) breaks the rules."""


class StudyExists(InvalidStudy):
    pass


class StudyNotRegistered(InvalidStudy):
    pass


class VerifyFailed(Exception):
    """The bucket could not be walked (storage failed)."""


class ExportFailed(Exception):
    """The export stopped: storage failed, or ``strict`` and a file was unreadable."""


class DatasetInvalid(ExportFailed):
    """The dataset written does not pass the Psych-DS checks (a bug: report it)."""


class ExportDependencyMissing(RuntimeError):
    """Parquet was asked for but pyarrow is not installed."""


class NotAnExport(ValueError):
    """The file is not the export it was given as, or lacks a column we need."""


@contextmanager
def storage_unavailable(
    message: str = "storage is unavailable right now; nothing was stored, please retry",
    *,
    retry_after: int | None = None,
    log_context: str = "",
) -> Iterator[None]:
    """Turn a ``StorageError`` raised inside the block into ``StorageUnavailable`` (503).

    The storage error's own text names endpoints and buckets: it goes to the operator's log,
    never into the answer, which carries ``message`` only.
    """
    try:
        yield
    except StorageError as exc:
        logger.warning("⚠️ Storage failed%s: %s", f" ({log_context})" if log_context else "", exc)
        raise StorageUnavailable(message, retry_after=retry_after) from exc


def log_refusal(method: str, path: str, status: int, message: str) -> None:
    """The one warning line written for every refused request: ``⚠️ Refused POST '/path' (413): 'why'``.

    ``%r``: the path and the message may carry a client's text (control characters, ESC, line breaks),
    which must neither forge nor garble a log line.
    """
    logger.warning("⚠️ Refused %s %r (%d): %r", method, path, status, message)
