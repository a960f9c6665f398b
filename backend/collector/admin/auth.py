"""Dashboard authentication: password check, signed session cookie, revocation, failed-login throttle.

Sessions are signed with a random secret that has nothing to do with the password, so a
stolen cookie tells nothing about the password. The secret comes from ``ADMIN_SESSION_SECRET``
or, when that is unset, is generated once and kept in the store itself (``SessionStateStore``,
created with create-if-absent), so every worker and every instance on the bucket shares it.
The signing key mixes in a digest of the password: changing the password ends every session.
Without ``ADMIN_PASSWORD`` the password is a hashed one kept in the bucket (``password.py``).

Revocation lives in the same stored object: logout adds the session's nonce to ``revoked``
(compare-and-swap), and every process re-reads the object at most every ``check_seconds``.
Past ``MAX_REVOKED`` live entries the ``epoch`` is bumped instead, which ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..storage import AlreadyExists, ObjectStore, PreconditionFailed
from .password import StoredPassword

logger = logging.getLogger("collector.admin")

COOKIE_NAME = "collector_admin"
SESSION_SECONDS = 8 * 3600
MAX_REVOKED = 1000
_KEY_PURPOSE = b"collector admin session cookie v2\0"
_TOKEN_VERSION = "v2"


@dataclass(frozen=True)
class SessionState:
    """What every process must agree on: the signing secret, the epoch and the revoked nonces."""

    secret: bytes
    epoch: int = 0
    revoked: dict[str, int] = field(default_factory=dict)  # nonce -> expiry (unix seconds)


class SessionStateSource(Protocol):
    def current(self) -> SessionState: ...
    def revoke(self, nonce: str, expiry: int, now: float) -> SessionState: ...


class MemorySessionState:
    """One process's own state (a random secret): for tools and tests with no shared store."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._state = SessionState(secret or secrets.token_bytes(32))
        self._lock = threading.Lock()

    def current(self) -> SessionState:
        return self._state

    def revoke(self, nonce: str, expiry: int, now: float) -> SessionState:
        with self._lock:
            self._state = _with_revoked(self._state, nonce, expiry, now)
            return self._state


class SessionStateStore:
    """The state kept as one JSON object in the bucket, cached for ``check_seconds`` per process.

    The object holds ``{"secret": hex, "epoch": int, "revoked": {nonce: expiry}}``; a configured
    secret (``ADMIN_SESSION_SECRET``) replaces the stored one, the rest is used as stored.
    """

    def __init__(
        self, store: ObjectStore, key: str, *, configured_secret: str | None, check_seconds: float
    ) -> None:
        self.store = store
        self.key = key
        self.check_seconds = check_seconds
        self._configured = configured_secret.encode("utf-8") if configured_secret else None
        self._cached: tuple[float, SessionState] | None = None
        self._lock = threading.Lock()

    def current(self) -> SessionState:
        """The state, re-read from the store when the cached copy is older than ``check_seconds``."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self.check_seconds:
            return cached[1]
        with self._lock:
            cached = self._cached  # another thread may have just re-read it
            if cached is not None and time.monotonic() - cached[0] < self.check_seconds:
                return cached[1]
            state, _ = self._load()
            self._cached = (time.monotonic(), state)
            return state

    def revoke(self, nonce: str, expiry: int, now: float) -> SessionState:
        """Add one session to the revoked list (compare-and-swap, retried when another process won)."""
        with self._lock:
            for _ in range(20):
                state, etag = self._load()
                updated = _with_revoked(state, nonce, expiry, now)
                try:
                    self.store.put(self.key, _encode(updated), if_match=etag)
                except PreconditionFailed:
                    continue
                self._cached = (time.monotonic(), updated)
                return updated
        raise PreconditionFailed(f"{self.key} kept changing; logout not recorded")

    def _load(self) -> tuple[SessionState, str]:
        stored = self.store.get_or_none(self.key)
        if stored is None:
            fresh = SessionState(secrets.token_bytes(32))
            try:
                etag = self.store.put(self.key, _encode(fresh), if_absent=True)
                return self._effective(fresh), etag
            except AlreadyExists:  # another worker created it first: use theirs
                stored = self.store.get(self.key)
        try:
            return self._effective(_decode(stored.body)), stored.etag
        except (ValueError, KeyError, TypeError, AttributeError):
            # Damaged: replace it (compare-and-swap). A new secret ends every session: safe.
            fresh = SessionState(secrets.token_bytes(32))
            etag = self.store.put(self.key, _encode(fresh), if_match=stored.etag)
            return self._effective(fresh), etag

    def _effective(self, state: SessionState) -> SessionState:
        if self._configured is None:
            return state
        return SessionState(self._configured, state.epoch, state.revoked)


def _encode(state: SessionState) -> bytes:
    document = {"secret": state.secret.hex(), "epoch": state.epoch, "revoked": state.revoked}
    return json.dumps(document, sort_keys=True).encode("utf-8")


def _decode(body: bytes) -> SessionState:
    document: Any = json.loads(body)
    secret = bytes.fromhex(document["secret"])
    if len(secret) < 16:
        raise ValueError("admin session secret too short")
    revoked = {str(k): int(v) for k, v in dict(document.get("revoked") or {}).items()}
    return SessionState(secret, int(document.get("epoch", 0)), revoked)


def _with_revoked(state: SessionState, nonce: str, expiry: int, now: float) -> SessionState:
    live = {n: e for n, e in state.revoked.items() if e > now}
    live[nonce] = expiry
    if len(live) > MAX_REVOKED:  # keep the object small: end every session instead
        return SessionState(state.secret, state.epoch + 1, {})
    return SessionState(state.secret, state.epoch, live)


class AdminAuth:
    """Checks the password and issues/validates tokens ``v2.{epoch}.{expiry}.{nonce}.{signature}``."""

    def __init__(
        self,
        password: str | None,
        state: SessionStateSource | None = None,
        stored: StoredPassword | None = None,
    ) -> None:
        """``password`` (``ADMIN_PASSWORD``) wins; without it, the ``stored`` hashed one is used."""
        self.stored = None if password else stored
        self.enabled = bool(password) or self.stored is not None
        secret = (password or secrets.token_urlsafe(32)).encode("utf-8")
        self._password_digest = hashlib.sha256(secret).digest()
        self.state = state or MemorySessionState()
        self._keys: dict[tuple[bytes, bytes], bytes] = {}

    def password_matches(self, candidate: str) -> bool:
        """Constant-time: comparing fixed-length digests hides the password's length too.

        With a stored password this may read the bucket and hashes (scrypt): call it off the loop.
        """
        if self.stored is not None:
            current = self.stored.current()
            if current is None:  # none yet (the start could not reach the bucket): make it now
                generated = self.stored.ensure()
                if generated is not None:
                    logger.warning("Admin dashboard password (generated): %s", generated)
                current = self.stored.current()
            return current is not None and current.matches(candidate)
        digest = hashlib.sha256(candidate.encode("utf-8")).digest()
        return self.enabled and hmac.compare_digest(digest, self._password_digest)

    def _password_fingerprint(self) -> bytes | None:
        """What of the password goes into the signing key (so a new password ends every session)."""
        if self.stored is None:
            return self._password_digest
        current = self.stored.current()
        return None if current is None else hashlib.sha256(current.encode()).digest()

    def signing_key(self, state: SessionState | None = None) -> bytes:
        """HMAC(random secret, purpose + password digest): unguessable without the secret."""
        secret = (state or self.state.current()).secret
        fingerprint = self._password_fingerprint()
        if fingerprint is None:  # no password stored: no session is valid, none can be issued
            raise LookupError("no dashboard password is set")
        key = self._keys.get((secret, fingerprint))
        if key is None:
            key = hmac.new(secret, _KEY_PURPOSE + fingerprint, hashlib.sha256).digest()
            self._keys = {(secret, fingerprint): key}
        return key

    def issue(self, now: float | None = None) -> str:
        state = self.state.current()
        expiry = int((now if now is not None else time.time()) + SESSION_SECONDS)
        payload = f"{_TOKEN_VERSION}.{state.epoch}.{expiry}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload, state)}"

    def valid(self, token: str | None, now: float | None = None) -> bool:
        return self._parse(token, now) is not None

    def revoke(self, token: str | None, now: float | None = None) -> bool:
        """End this session everywhere; False when the token was not a live session anyway."""
        now = time.time() if now is None else now
        parsed = self._parse(token, now)
        if parsed is None:
            return False
        nonce, expiry = parsed
        self.state.revoke(nonce, expiry, now)
        return True

    def _parse(self, token: str | None, now: float | None = None) -> tuple[str, int] | None:
        """(nonce, expiry) of a live session token, else None."""
        if not self.enabled or not token or len(token) > 256 or token.count(".") != 4:
            return None
        payload, _, signature = token.rpartition(".")
        version, epoch, expiry, nonce = payload.split(".")
        if version != _TOKEN_VERSION or not (epoch.isdigit() and expiry.isdigit()):
            return None
        state = self.state.current()
        try:
            expected = self._sign(payload, state)
        except LookupError:
            return None
        if not hmac.compare_digest(signature, expected):
            return None
        now = time.time() if now is None else now
        if int(epoch) != state.epoch or int(expiry) <= now or nonce in state.revoked:
            return None
        return nonce, int(expiry)

    def form_token(self, session: str) -> str:
        """A CSRF token for forms that change data, bound to this session cookie."""
        return self._sign(f"form:{session}", self.state.current())

    def form_token_valid(self, session: str | None, token: str) -> bool:
        # Bytes: compare_digest refuses str with non-ASCII characters, which a forged form may send.
        expected = self.form_token(session or "").encode("ascii")
        return bool(session) and hmac.compare_digest(token.encode("utf-8", "replace"), expected)

    def _sign(self, payload: str, state: SessionState) -> str:
        return hmac.new(
            self.signing_key(state), payload.encode("ascii", "replace"), hashlib.sha256
        ).hexdigest()


class LoginThrottle:
    """At most ``max_failures`` failed logins per client address in ``window_seconds`` (per process).

    Only the failing address waits: there is no global cap, because one would let anyone lock the
    research team out by guessing from many addresses. At most ``max_clients`` addresses are
    remembered (the oldest forgotten first), so a flood of addresses cannot exhaust memory.
    """

    def __init__(
        self, max_failures: int = 5, window_seconds: float = 300.0, max_clients: int = 100_000
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float | None = None) -> int | None:
        """Seconds to wait before this client may try again, or None if it may try now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.get(client)
            if failures is None:
                return None
            while failures and failures[0] <= now - self.window_seconds:
                failures.popleft()
            if not failures:
                del self._failures[client]
                return None
            if len(failures) >= self.max_failures:
                return max(1, int(failures[0] + self.window_seconds - now) + 1)
        return None

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.pop(client, None) or deque(maxlen=self.max_failures)
            failures.append(now)
            self._failures[client] = failures  # most recent last
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
