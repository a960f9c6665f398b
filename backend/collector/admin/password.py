"""The dashboard password when ``ADMIN_PASSWORD`` is unset: generated once, kept hashed in the bucket.

``{prefix}/admin/password.json`` (docs/bucket-layout.md §9) holds a scrypt hash, never the password,
so the password survives restarts and every worker and instance on the bucket shares it. It is
created with create-if-absent, like the session secret (``SessionStateStore``), so of several
processes starting at once exactly one generates it and prints it; ``collector admin-password``
replaces it. Each process re-reads it at most every ``check_seconds``, so a new password takes
effect everywhere within seconds, and (being part of the signing key) ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..storage import AlreadyExists, ObjectStore

logger = logging.getLogger("collector.admin")

# scrypt with n=2**14, r=8: 16 MiB and some 50 ms per check, which the login throttle bounds.
_N, _R, _P = 2**14, 8, 1
_SCHEME = "scrypt"


def generated_password() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class PasswordHash:
    salt: bytes
    digest: bytes
    n: int = _N
    r: int = _R
    p: int = _P

    @classmethod
    def of(cls, password: str) -> PasswordHash:
        salt = secrets.token_bytes(16)
        return cls(salt, _scrypt(password, salt, _N, _R, _P))

    def matches(self, candidate: str) -> bool:
        return hmac.compare_digest(_scrypt(candidate, self.salt, self.n, self.r, self.p), self.digest)

    def encode(self) -> bytes:
        document = {
            "scheme": _SCHEME,
            "n": self.n,
            "r": self.r,
            "p": self.p,
            "salt": self.salt.hex(),
            "hash": self.digest.hex(),
        }
        return json.dumps(document, sort_keys=True).encode("utf-8")

    @classmethod
    def decode(cls, body: bytes) -> PasswordHash:
        document: Any = json.loads(body)
        if document.get("scheme") != _SCHEME:
            raise ValueError("not a scrypt password hash")
        n, r, p = int(document["n"]), int(document["r"]), int(document["p"])
        # Bounded: a tampered object must not make each login cost gigabytes or minutes.
        if not (2 <= n <= 2**16 and 1 <= r <= 16 and 1 <= p <= 4):
            raise ValueError("scrypt parameters out of range")
        return cls(bytes.fromhex(document["salt"]), bytes.fromhex(document["hash"]), n, r, p)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32
    )


class StoredPassword:
    """The hashed password object in the bucket, cached for ``check_seconds`` per process."""

    def __init__(self, store: ObjectStore, key: str, *, check_seconds: float = 2.0) -> None:
        self.store = store
        self.key = key
        self.check_seconds = check_seconds
        self._cached: tuple[float, PasswordHash | None] | None = None
        self._lock = threading.Lock()

    def current(self) -> PasswordHash | None:
        """The stored hash (None when there is none, or it is damaged: nobody can log in then)."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self.check_seconds:
            return cached[1]
        with self._lock:
            stored = self.store.get_or_none(self.key)
            try:
                found = PasswordHash.decode(stored.body) if stored is not None else None
            except (ValueError, KeyError, TypeError, AttributeError):
                logger.error("❌ %s is damaged; set a new password with `collector admin-password`", self.key)
                found = None
            self._cached = (time.monotonic(), found)
            return found

    def ensure(self) -> str | None:
        """Generate and store a password unless one is stored: the new password, to this caller only.

        None when one was already there, or another process created it first (it prints it).
        """
        if self.store.get_or_none(self.key) is not None:
            return None
        password = generated_password()
        try:
            self.store.put(self.key, PasswordHash.of(password).encode(), if_absent=True)
        except AlreadyExists:
            return None
        self._cached = None
        return password

    def replace(self, password: str) -> None:
        """Set a new password (``collector admin-password``); every process sees it within seconds."""
        self.store.put(self.key, PasswordHash.of(password).encode())
        self._cached = None
