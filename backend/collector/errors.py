"""The collector's exceptions, each carrying the HTTP status it maps to.

    CollectorError                 500  base; never raised directly
    ├── InvalidUpload              400  the request is malformed; retrying will not help
    │   ├── RequestTimeout         408  the body arrived too slowly
    │   ├── PayloadTooLarge        413
    │   ├── UnsupportedMediaType   415
    │   └── UnprocessableUpload    422  well-formed JSON that breaks the contract
    ├── NotAuthenticated           401
    ├── ParticipantKeyMismatch     403  wrong/missing participant key; status not changed
    ├── NotFound                   404
    ├── ParticipantErased          410  the research team erased this participant
    ├── RateLimited                429  retry later
    ├── Overloaded                 503  too many uploads in progress; retry later
    └── StorageUnavailable         503  the store failed past its retry deadline; retry later

Storage backends raise their own, narrower exceptions (``collector.storage.base``); the upload
service turns the ones it cannot handle into ``StorageUnavailable``. ``http_errors`` maps all of
these to the single JSON error shape.
"""

from __future__ import annotations


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


class NotFound(CollectorError):
    status = 404


class ParticipantKeyMismatch(CollectorError):
    status = 403
    reason = "participant-key"


class ParticipantErased(CollectorError):
    status = 410
    reason = "erased"


class RateLimited(CollectorError):
    status = 429


class Overloaded(CollectorError):
    status = 503


class StorageUnavailable(CollectorError):
    status = 503
