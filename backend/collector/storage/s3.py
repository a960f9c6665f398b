"""S3-compatible backend (Cloudflare R2, AWS S3, MinIO, moto): obstore for uploads, boto3 for listing.

The upload path goes through obstore: about 70 µs of CPU per request where boto3 spends about
1,300 µs (``bench/bench_s3_clients.py`` measures them). ``put_async``/``get_async``, which the
upload path awaits, use its async API on the event loop; ``put``/``get`` (the CLI, the research
tools, the conditional-write proof) its sync API, which releases the GIL while it waits. Both
share one connection pool without a cap on connections in use. The async API beat the sync one
called from a worker thread per request in ``bench_s3_clients.py`` (1.0 to 1.4 times the requests/s at
30 ms and 64 or 256 at once, in one run alternating them), but it can abort the interpreter at
exit: ``close`` guards against that. Conditional writes map to obstore's ``mode="create"``
(``If-None-Match: *``) and ``mode={"e_tag": ...}`` (``If-Match``).

Listing and the health check, used by the research tools and ``/healthz``, stay on boto3, whose
``list_objects_v2`` prefix is a plain string prefix as the rest of the code expects (obstore's is
a path prefix). Neither client retries on its own: ``RetryingStore`` owns retrying, with one
deadline for the whole upload.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta

import boto3
import obstore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from obstore import exceptions as obstore_errors
from obstore.store import S3Store as _ObstoreS3

from .base import (
    AlreadyExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StorageError,
    StoredObject,
    TransientStorageError,
)

# Codes a later retry can succeed on. 409 ConditionalRequestConflict is S3's answer to two
# conditional writes racing on one key: the write did not happen, and trying again may succeed.
_TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
    "ConditionalRequestConflict",
    "500",
    "502",
    "503",
    "504",
}
# How long close() lets obstore's runtime threads settle after async calls (see close()).
_ASYNC_SETTLE_SECONDS = 0.1
# obstore reports the HTTP status only in its message ("... non-2xx status code: 503 ...").
_STATUS_IN_MESSAGE = re.compile(r"status code: (\d{3})")


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        region: str = "auto",
        timeout_seconds: float = 3.0,
        max_connections: int = 64,
    ) -> None:
        self.bucket = bucket
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=None if region == "auto" and not endpoint_url else region,
            config=Config(
                connect_timeout=timeout_seconds,
                read_timeout=timeout_seconds,
                # total_max_attempts counts the first try: 1 means botocore never retries.
                # ("max_attempts": 1 would still retry once, doubling every stall and timeout.)
                retries={"total_max_attempts": 1, "mode": "standard"},
                max_pool_connections=max_connections,
                s3={"addressing_style": "path"},
            ),
        )
        seconds = f"{timeout_seconds:g}s"
        no_retries = {
            "max_retries": 0,
            "retry_timeout": timedelta(seconds=timeout_seconds),
            "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(seconds=1)},
        }
        self._objects = _ObstoreS3(
            bucket,
            endpoint=endpoint_url,
            region="us-east-1" if region == "auto" and not endpoint_url else region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            virtual_hosted_style_request=False,
            client_options={
                "allow_http": bool(endpoint_url and endpoint_url.startswith("http://")),
                "timeout": seconds,
                "connect_timeout": seconds,
                # Idle connections kept for reuse; connections in use are not capped.
                "pool_max_idle_per_host": str(max_connections),
            },
            retry_config=no_retries,
        )
        self._used_async = False

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        try:
            answer = obstore.put(self._objects, key, body, mode=_put_mode(if_absent, if_match))
        except Exception as exc:  # obstore's errors, and its transport's, have no common base
            raise _put_error(key, exc, if_absent=if_absent, if_match=if_match) from None
        return _unquoted(answer["e_tag"] or "")

    def get(self, key: str) -> StoredObject:
        try:
            answer = obstore.get(self._objects, key)
            body = bytes(answer.bytes())
        except Exception as exc:
            raise _get_error(key, exc) from None
        return StoredObject(body, _unquoted(answer.meta["e_tag"] or ""))

    async def put_async(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        """``put`` awaited on the event loop through obstore's async API: no worker thread."""
        self._used_async = True
        try:
            answer = await obstore.put_async(self._objects, key, body, mode=_put_mode(if_absent, if_match))
        except Exception as exc:
            raise _put_error(key, exc, if_absent=if_absent, if_match=if_match) from None
        return _unquoted(answer["e_tag"] or "")

    async def get_async(self, key: str) -> StoredObject:
        self._used_async = True
        try:
            answer = await obstore.get_async(self._objects, key)
            body = bytes(await answer.bytes_async())
        except Exception as exc:
            raise _get_error(key, exc) from None
        return StoredObject(body, _unquoted(answer.meta["e_tag"] or ""))

    def delete(self, key: str) -> None:
        # S3 and R2 answer 204 for a missing key too, so deleting is idempotent as the contract asks.
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404"}:
                return
            raise _storage_error("delete", key, exc) from None
        except BotoCoreError as exc:
            raise TransientStorageError(f"S3 delete {key}: {exc}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], item["Size"], item["LastModified"])
        except ClientError as exc:
            raise _storage_error("list", prefix, exc) from None
        except BotoCoreError as exc:
            raise TransientStorageError(f"S3 list {prefix}: {exc}") from None

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise _storage_error("head bucket", self.bucket, exc) from None
        except BotoCoreError as exc:
            raise TransientStorageError(f"S3 unreachable: {exc}") from None

    def close(self) -> None:
        self._client.close()
        if self._used_async:
            # obstore's runtime threads finish with Python objects just after an awaited call has
            # answered; an interpreter exiting in that instant aborts (docs/reliability.md: 5 to
            # 11 plain script runs in 30). Giving them a moment here, at shutdown, lets the process exit
            # cleanly (tests/test_store_async.py runs such processes and checks their exit code).
            time.sleep(_ASYNC_SETTLE_SECONDS)


def _put_mode(if_absent: bool, if_match: str | None) -> str | dict[str, str]:
    if if_absent:
        return "create"  # If-None-Match: *
    if if_match is not None:
        return {"e_tag": _quoted(if_match)}  # only e_tag: "version": None breaks the request
    return "overwrite"


def _put_error(key: str, exc: Exception, *, if_absent: bool, if_match: str | None) -> StorageError:
    """What a failed put means for the caller, from obstore's exception."""
    if isinstance(exc, obstore_errors.AlreadyExistsError):
        return AlreadyExists(key)
    if isinstance(exc, obstore_errors.PreconditionError):
        # 412, or 404 NoSuchKey for an If-Match on a missing key (moto, R2); a 409 racing
        # write is reported the same way by obstore, but did not happen: retry it.
        if _is_conflict(exc):
            return TransientStorageError(f"S3 put {key}: conflicting conditional writes")
        return (AlreadyExists if if_absent else PreconditionFailed)(key)
    if isinstance(exc, obstore_errors.NotFoundError | FileNotFoundError) and if_match is not None:
        return PreconditionFailed(key)
    return _obstore_error("put", key, exc)


def _get_error(key: str, exc: Exception) -> StorageError:
    if isinstance(exc, obstore_errors.NotFoundError | FileNotFoundError):
        return ObjectNotFound(key)
    return _obstore_error("get", key, exc)


def _is_conflict(exc: Exception) -> bool:
    """S3's 409 ConditionalRequestConflict: two conditional writes raced, this one did not happen."""
    text = str(exc)
    found = _STATUS_IN_MESSAGE.search(text)
    return "ConditionalRequestConflict" in text or (found is not None and found.group(1) == "409")


def _obstore_error(action: str, key: str, exc: Exception) -> StorageError:
    """A storage error from obstore's: transient unless the server answered a permanent 4xx.

    The message keeps the status and S3 error code, never the request's credentials.
    """
    text = str(exc)
    found = _STATUS_IN_MESSAGE.search(text)
    status = int(found.group(1)) if found else 0
    code = next((c for c in _TRANSIENT_CODES if f"<Code>{c}</Code>" in text), "")
    message = f"S3 {action} {key} failed: {type(exc).__name__} (HTTP {status or 'no answer'})"
    if isinstance(exc, obstore_errors.PermissionDeniedError | obstore_errors.UnauthenticatedError):
        return StorageError(message)
    if status == 0 or status >= 500 or status in (408, 409, 429) or code:
        return TransientStorageError(message)  # no answer (timeout, reset) or the server's trouble
    return StorageError(message)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _storage_error(action: str, key: str, exc: ClientError) -> StorageError:
    # The message names the S3 error code but never the request's credentials or signature.
    code = _code(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    message = f"S3 {action} {key} failed: {code or 'error'} (HTTP {status})"
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return TransientStorageError(message)
    return StorageError(message)


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'


def _unquoted(etag: str) -> str:
    return etag.strip('"')
