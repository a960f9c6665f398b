"""Settings for tests and benchmarks: a temp folder, or a fresh bucket on an S3 server (moto) on loopback."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3

from collector.settings import Settings

TEST_ADMIN_PASSWORD = "test-admin-password-1"


def make_bucket(endpoint: str) -> str:
    """A fresh, empty bucket on the S3 server, so tests never see each other's objects."""
    name = f"test-bucket-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket=name)
    return name


def s3_settings(endpoint: str, *, bucket: str | None = None, **overrides: object) -> Settings:
    """Settings for the S3 server at ``endpoint``: a fresh bucket, or ``bucket`` as it is (maybe absent)."""
    return Settings(
        s3_endpoint_url=endpoint,
        r2_access_key_id="test",
        r2_secret_access_key="test",
        s3_region="us-east-1",
        r2_bucket_name=bucket or make_bucket(endpoint),
        admin_password=TEST_ADMIN_PASSWORD,
        **overrides,
    )


def local_settings(root: Path, **overrides: object) -> Settings:
    """Settings for the local-folder backend under ``root``."""
    return Settings(local_storage_dir=root, admin_password=TEST_ADMIN_PASSWORD, **overrides)


def racing_no_erasure(settings: Settings) -> Settings:
    """``settings`` whose erasures skip the settle wait (``ERASURE_SETTLE_SECONDS``), for a test in
    which no upload races an erasure: the wait only lets such uploads land before the erasure's
    last listing (docs/reliability.md T10), and costs 1.25 s per erasure.

    ``model_copy`` does not validate, on purpose: a deployment cannot go below the confirmation
    window, and a test of the fence itself keeps the real wait.
    """
    return settings.model_copy(update={"erasure_settle_seconds": 0.0})
