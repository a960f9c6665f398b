"""All configuration, read once from the environment and passed in explicitly (docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .tombstone import CONFIRM_WINDOW_SECONDS

StorageKind = Literal["local", "s3"]
# The variables that point the collector at a bucket; setting any of them means "use a bucket".
BUCKET_VARIABLES = ("R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "S3_ENDPOINT_URL")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Settings(BaseSettings):
    """The collector's settings. Build one with ``Settings()`` (environment) or with keywords in tests."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Which backend the deployment expects; unset: a bucket when any bucket variable is set, else
    # the local folder. Either way a partial bucket configuration stops the collector at start.
    storage: StorageKind | None = None
    r2_account_id: str | None = None
    r2_access_key_id: str | None = None
    r2_secret_access_key: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "auto"
    r2_bucket_name: str = "hearts-data-cache"
    data_prefix: str = "volcano-audio-anonymized-data"
    local_storage_dir: Path = Path("./data")

    host: str = "127.0.0.1"
    port: int = 5005
    workers: int = Field(default=1, ge=1)
    allowed_origins: str = ""

    admin_password: str | None = None
    # Signs dashboard sessions. Unset: a random one is generated once and kept in the bucket
    # ({prefix}/admin/session-secret.json), shared by every worker and instance.
    admin_session_secret: str | None = Field(default=None, min_length=32)
    # How stale a process's view of logouts may be (seconds) before it re-reads the bucket.
    admin_session_check_seconds: float = Field(default=2.0, ge=0)
    # Cookie Secure flag: auto = unless served over plain http on a loopback HOST; behind a
    # TLS proxy on another host use always (or let the proxy send X-Forwarded-Proto).
    admin_cookie_secure: Literal["auto", "always", "never"] = "auto"
    # The dashboard's public address (e.g. https://collector.example.org), for when a proxy in
    # front rewrites Host and sends no X-Forwarded-Host: dashboard forms posted from this origin
    # are accepted. Unset: the request's Host or X-Forwarded-Host decides.
    public_url: str | None = None
    max_upload_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=64, ge=4)
    max_batch_items: int = Field(default=50, ge=1)
    # JSON values per body, counted cheaply (structural bytes) before the parse: a 4 MB body of
    # a million empty objects would otherwise cost a second of CPU. Refused with 413 beyond it.
    max_json_values: int = Field(default=500_000, ge=100)

    # Participant keys, trust on first use (docs/trust-model.md). Off: anyone who knows an ID can
    # change and read that participant's status (for studies whose IDs are unguessable secrets).
    participant_keys: bool = True
    # A client timestamp further ahead of server time than this is not used to order status.json
    # or to name files (server receipt time is); the client's text stays in the document.
    clock_skew_seconds: int = Field(default=300, ge=0)

    # How long one upload may spend retrying a failing store before answering 503.
    storage_deadline_seconds: float = Field(default=5.0, gt=0)
    storage_timeout_seconds: float = Field(default=3.0, gt=0)
    retry_after_seconds: int = Field(default=5, ge=1)
    # A client trickling its body (slow-loris) is cut off after this long.
    body_timeout_seconds: float = Field(default=15.0, gt=0)
    # A connection whose request headers have not all arrived this long after it opened (or
    # after its last response) is closed by the server itself: idle sockets cannot pile up.
    header_timeout_seconds: float = Field(default=10.0, gt=0)

    # Per-client-address rate limit on the participant API (429 + Retry-After beyond it). A browser
    # sends a few uploads a minute; the default leaves room for hundreds of participants behind
    # one NAT (a school, a lab). 0 switches it off. Behind a reverse proxy the client address
    # comes from X-Forwarded-For, which uvicorn trusts from FORWARDED_ALLOW_IPS (default 127.0.0.1).
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    rate_limit_burst: int = Field(default=300, ge=1)
    # New participants (no status.json yet) per address and hour; also off when the rate limit is.
    new_participants_per_hour: int = Field(default=1000, ge=1)
    # Body bytes per address and hour, beside the request budget (429 + Retry-After beyond it):
    # what one address can make the collector store. A lab of a hundred participants behind one
    # NAT, each sending a 4 MB submission a few times over, stays far under it; one address
    # filling a disk or a bucket's bill does not. At most this much at once, refilled over the
    # hour. Also off when the rate limit is; 0 switches it off alone.
    upload_bytes_per_address_per_hour: int = Field(default=2 * 1024**3, ge=0)
    # Bytes stored without the participant's key (submissions and trials marked keyVerified:
    # false) per participant and hour, per process. A participant's own browser on a new device
    # sends a few; a flood against one participant ID is refused (429) past it. 0: no cap.
    unverified_bytes_per_participant_per_hour: int = Field(default=32 * 1024 * 1024, ge=0)
    # Uploads handled at once by one process: bounds memory (each may hold a body of up to
    # MAX_UPLOAD_BYTES). More wait up to upload_queue_seconds, then get 503 + Retry-After.
    max_concurrent_uploads: int = Field(default=64, ge=1)
    # Bodies still arriving from one client address at once: a body on its way holds no upload
    # slot, so this bounds what one address's slow or idle bodies can hold. A browser sends one
    # upload at a time; a lab of participants behind one address rarely has dozens arriving.
    max_bodies_in_flight_per_address: int = Field(default=32, ge=1)
    upload_queue_seconds: float = Field(default=10.0, ge=0)
    # Participants whose last status.json this process remembers, so their next upload skips the
    # status read (collector.status_cache; about 200 bytes each). 0: read before every upload.
    status_cache_size: int = Field(default=10_000, ge=0)
    # How stale a process's view of the study registry may be (seconds): a study closed or
    # added on one instance takes effect on the others within this (docs/studies.md).
    study_registry_check_seconds: float = Field(default=2.0, ge=0)
    # How long an erasure waits after writing its tombstone before its last listing, so that
    # every upload that confirmed the old status has landed by then (docs/reliability.md T10).
    # Uploads land within the fence's confirmation window (collector.tombstone), a protocol
    # constant, so this must be longer than that window; more leaves more margin on a slow bucket.
    erasure_settle_seconds: float = 1.25

    # A local folder with less free space or fewer free inodes than this refuses uploads (503 +
    # Retry-After) and /healthz says so, rather than filling the disk to the last byte.
    min_free_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    min_free_inodes: int = Field(default=10_000, ge=0)
    # Under this much free space (above MIN_FREE_BYTES), /healthz still answers 200 but says
    # "lowOnSpace": true, so the operator is warned before uploads are refused.
    free_space_warning_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    # Threads one process runs storage calls in (anyio's default is 40). A thread waits for its
    # storage request, so against a distant bucket this, not the CPU, would cap uploads/s.
    storage_threads: int = Field(default=256, ge=1)
    # The event loop `collector serve` runs (uvicorn, with httptools parsing HTTP either way).
    # uvloop: with uploads stored on the event loop (no worker thread holding the GIL) it accepts a
    # burst of 256 connections within 0.3 s and does about twice asyncio's uploads/s on the local
    # folder (docs/reliability.md, "Issue 18", event loop).
    event_loop: Literal["asyncio", "uvloop"] = "uvloop"

    @model_validator(mode="after")
    def _check_storage_threads(self) -> Settings:
        # An upload holding a slot must never queue for a thread: that wait would have no bound
        # (UPLOAD_QUEUE_SECONDS bounds the waits before it). Each holds one thread at a time;
        # the threads over MAX_CONCURRENT_UPLOADS serve the dashboard and /healthz.
        if self.storage_threads <= self.max_concurrent_uploads:
            raise ValueError(
                f"STORAGE_THREADS ({self.storage_threads}) must be more than MAX_CONCURRENT_UPLOADS "
                f"({self.max_concurrent_uploads}): each upload in progress may hold a thread"
            )
        return self

    @model_validator(mode="after")
    def _check_admin_password(self) -> Settings:
        # A placeholder password guarding real participant data is worse than none: refuse it.
        if self.admin_password is not None and is_placeholder_password(self.admin_password):
            raise ValueError("ADMIN_PASSWORD is a placeholder; set a real secret or leave it unset")
        return self

    @field_validator("erasure_settle_seconds")
    @classmethod
    def _settle_outlasts_the_window(cls, value: float) -> float:
        # A shorter wait would let an upload that confirmed the status just before the tombstone
        # land after the erasure returned: the erasure would look final and not be.
        if not value > CONFIRM_WINDOW_SECONDS:
            raise ValueError(
                f"ERASURE_SETTLE_SECONDS must be longer than the uploads' {CONFIRM_WINDOW_SECONDS} s "
                "confirmation window it waits out"
            )
        return value

    @field_validator("storage", *(name.lower() for name in BUCKET_VARIABLES), mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # A platform's form often leaves a variable defined but empty: that is "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("allowed_origins")
    @classmethod
    def _normalise_origins(cls, value: str) -> str:
        return ",".join(normalised_origin(entry) for entry in value.split(",") if entry.strip())

    @model_validator(mode="after")
    def _check_storage(self) -> Settings:
        # A partial bucket configuration must not fall back to the local folder: on a platform's
        # ephemeral disk every upload would be acknowledged, then lost at the next deploy.
        if self.storage == "local":
            return self
        missing = self.missing_bucket_variables()
        given = [name for name in BUCKET_VARIABLES if getattr(self, name.lower())]
        if self.storage == "s3" and missing:
            raise ValueError(f"STORAGE=s3 but the bucket is not configured: set {_listed(missing)}")
        if given and missing:
            raise ValueError(
                f"incomplete bucket configuration: {_listed(given)} set, {_listed(missing)} missing. "
                "Set the missing variable(s), or STORAGE=local to store into the local folder"
            )
        return self

    def missing_bucket_variables(self) -> list[str]:
        """What is still needed to reach a bucket: an endpoint and both halves of the key."""
        missing = [] if self.endpoint_url else ["R2_ACCOUNT_ID (or S3_ENDPOINT_URL)"]
        missing += [
            name for name in ("R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY") if not getattr(self, name.lower())
        ]
        return missing

    @model_validator(mode="after")
    def _check_public_url(self) -> Settings:
        if self.public_url is not None:
            parts = urlsplit(self.public_url.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("PUBLIC_URL must be an http(s) URL such as https://collector.example.org")
        return self

    @property
    def public_origin(self) -> str | None:
        """``scheme://host[:port]`` of ``PUBLIC_URL``, as a browser sends it in ``Origin``."""
        if not self.public_url:
            return None
        parts = urlsplit(self.public_url.strip())
        return f"{parts.scheme}://{parts.netloc}".lower()

    @property
    def storage_kind(self) -> StorageKind:
        """``STORAGE`` when set; else ``s3`` when a bucket is configured, else the local directory."""
        if self.storage is not None:
            return self.storage
        return "s3" if any(getattr(self, name.lower()) for name in BUCKET_VARIABLES) else "local"

    @property
    def endpoint_url(self) -> str | None:
        """The S3 endpoint: ``S3_ENDPOINT_URL`` if set, else the R2 account's endpoint."""
        if self.s3_endpoint_url:
            return self.s3_endpoint_url
        if self.r2_account_id:
            return f"https://{self.r2_account_id}.r2.cloudflarestorage.com"
        return None

    @property
    def cors_origins(self) -> list[str]:
        """Origins allowed by CORS; ``*`` on the local default so a study page on any port works."""
        origins = [o for o in self.allowed_origins.split(",") if o]
        if origins:
            return origins
        return ["*"] if self.storage_kind == "local" else []


def is_placeholder_password(password: str) -> bool:
    """A placeholder guarding real participant data is worse than none: refused wherever it is set."""
    return password.strip().lower() in {"", "changeme", "change-me", "password", "admin"}


def normalised_origin(entry: str) -> str:
    """``entry`` as a browser sends it in ``Origin``: lower-case scheme and host, no default port,
    no trailing slash. ``ValueError`` naming the entry when it is not an origin at all."""
    text = entry.strip()
    if text == "*":
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme.lower() not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(
            f"{text!r} is not an origin; write each entry as scheme://host[:port], "
            "e.g. https://study.example.org, with no path"
        )
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")


def _listed(names: list[str]) -> str:
    return ", ".join(names)
