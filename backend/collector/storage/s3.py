"""S3-compatible backend (Cloudflare R2, AWS S3, MinIO, moto) over boto3.

boto3 is used because it is the best-kept S3 client for Python, supports the conditional
``IfNoneMatch``/``IfMatch`` writes we rely on, and is thread-safe per client, so one client
serves every request thread. botocore's own retries are switched off: ``RetryingStore`` owns
retrying, with one deadline for the whole upload.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

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
# conditional writes racing on one key: the caller re-reads and tries again.
_TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
    "500",
    "502",
    "503",
    "504",
}


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

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        conditions: dict[str, str] = {}
        if if_absent:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = _quoted(if_match)
        try:
            answer = self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                **conditions,
            )
        except ClientError as exc:
            code = _code(exc)
            if code in {"PreconditionFailed", "412"}:
                raise (AlreadyExists if if_absent else PreconditionFailed)(key) from None
            if code == "ConditionalRequestConflict" or (code in {"NoSuchKey", "404"} and if_match):
                # R2/S3 answer a CAS on a missing key, or a racing one, with these.
                raise PreconditionFailed(key) from None
            raise _storage_error("put", key, exc) from None
        except BotoCoreError as exc:
            raise TransientStorageError(f"S3 put {key}: {exc}") from None
        return _unquoted(answer["ETag"])

    def get(self, key: str) -> StoredObject:
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=key)
            body = answer["Body"].read()
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404"}:
                raise ObjectNotFound(key) from None
            raise _storage_error("get", key, exc) from None
        except BotoCoreError as exc:
            raise TransientStorageError(f"S3 get {key}: {exc}") from None
        return StoredObject(body, _unquoted(answer["ETag"]))

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
