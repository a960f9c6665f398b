"""Dashboard authentication: password check, signed session cookie, failed-login throttle.

The cookie is signed with a key derived from ``ADMIN_PASSWORD`` by HMAC, so every worker
process (and every collector instance with the same password) accepts the others' sessions
without shared state, and changing the password ends every session. Logout clears the cookie;
there is no server-side revocation list, so sessions are kept short (``SESSION_SECONDS``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque

COOKIE_NAME = "collector_admin"
SESSION_SECONDS = 8 * 3600
_KEY_PURPOSE = b"collector admin session cookie v1"


class AdminAuth:
    """Checks the password and issues/validates session tokens ``{expiry}.{nonce}.{signature}``."""

    def __init__(self, password: str | None) -> None:
        self.enabled = bool(password)
        secret = (password or secrets.token_urlsafe(32)).encode("utf-8")
        self._password_digest = hashlib.sha256(secret).digest()
        self._key = hmac.new(secret, _KEY_PURPOSE, hashlib.sha256).digest()

    def password_matches(self, candidate: str) -> bool:
        """Constant-time: comparing fixed-length digests hides the password's length too."""
        digest = hashlib.sha256(candidate.encode("utf-8")).digest()
        return self.enabled and hmac.compare_digest(digest, self._password_digest)

    def issue(self, now: float | None = None) -> str:
        expiry = int((now if now is not None else time.time()) + SESSION_SECONDS)
        payload = f"{expiry}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def valid(self, token: str | None, now: float | None = None) -> bool:
        if not self.enabled or not token or token.count(".") != 2:
            return False
        payload, _, signature = token.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return False
        expiry = payload.split(".", 1)[0]
        return expiry.isdigit() and int(expiry) > (now if now is not None else time.time())

    def form_token(self, session: str) -> str:
        """A CSRF token for forms that change data, bound to this session cookie."""
        return self._sign(f"form:{session}")

    def form_token_valid(self, session: str | None, token: str) -> bool:
        return bool(session) and hmac.compare_digest(token, self.form_token(session or ""))

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode("ascii", "replace"), hashlib.sha256).hexdigest()


class LoginThrottle:
    """At most ``max_failures`` failed logins per client in ``window_seconds`` (per process).

    Also caps failures from all clients together, so guessing from many addresses is slow too.
    """

    def __init__(self, max_failures: int = 5, window_seconds: float = 300.0, global_max: int = 100) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.global_max = global_max
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float | None = None) -> int | None:
        """Seconds to wait before this client may try again, or None if it may try now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            mine = self._trimmed(self._failures.get(client, deque()), now)
            everyone = self._trimmed(self._all, now)
            for failures, limit in ((mine, self.max_failures), (everyone, self.global_max)):
                if len(failures) >= limit:
                    return max(1, int(failures[0] + self.window_seconds - now) + 1)
        return None

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._failures.setdefault(client, deque()).append(now)
            self._all.append(now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _trimmed(self, failures: deque[float], now: float) -> deque[float]:
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        return failures
