"""Per-client rate limiting of the participant API: a token bucket per client address.

Each address may make ``burst`` requests at once and ``per_minute`` a minute sustained; beyond
that the request is refused with ``RateLimited`` (429 + ``Retry-After``) before its body is read.
Costs are per stored item: a batch pays one more token for each item after its first
(``routes.uploads``). A second limiter of the same kind caps *new* participants per address and
hour (``ParticipantLimits``). The table of addresses is bounded (least recently seen dropped
first), so many addresses cannot grow memory without limit; a dropped address simply starts
again with a full bucket.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from ..errors import RateLimited
from ..settings import Settings

MAX_TRACKED_CLIENTS = 50_000


class RateLimiter:
    """A token bucket per client address (``admit``, or ``wait_seconds`` to ask without refusing)."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0  # tokens per second; 0 means no limit
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        # The request limiter runs on the event loop, the new-participant one in upload threads.
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        return cls(settings.rate_limit_per_minute, settings.rate_limit_burst)

    @property
    def tracked_clients(self) -> int:
        return len(self._buckets)

    def wait_seconds(self, client: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens for ``client``: 0.0 if admitted, else how long until they are there.

        A cost above the burst is charged as the whole burst (a full bucket admits it), so no
        request is refused forever.
        """
        if self.rate <= 0:
            return 0.0
        cost = min(cost, self.burst)
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= cost:
                tokens -= cost
            else:
                wait = (cost - tokens) / self.rate
            self._buckets[client] = (tokens, now)  # re-inserted: now the most recently seen
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait

    def give_back(self, client: str, cost: float = 1.0) -> None:
        """Return ``cost`` tokens taken by ``wait_seconds`` for something that did not happen."""
        if self.rate <= 0:
            return
        with self._lock:
            if client in self._buckets:
                tokens, at = self._buckets[client]
                self._buckets[client] = (min(self.burst, tokens + min(cost, self.burst)), at)

    def admit(self, client: str) -> None:
        """Take one token for ``client``, or raise ``RateLimited`` (429 + Retry-After)."""
        wait = self.wait_seconds(client)
        if wait > 0:
            raise too_many_uploads(wait)


def _hourly(amount: int) -> RateLimiter:
    """A bucket holding ``amount`` at most, refilled at ``amount`` an hour (0: no limit)."""
    return RateLimiter(amount / 60.0, max(1, amount))


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def too_many_uploads(wait: float) -> RateLimited:
    return RateLimited(
        "too many uploads from this address; please retry later", retry_after=max(1, math.ceil(wait))
    )


@dataclass(frozen=True)
class ParticipantLimits:
    """The participant API's limits: per address, requests (and batch items), body bytes and new
    participants; per participant, bytes stored without their key. All answer 429 + Retry-After."""

    uploads: RateLimiter
    new_participants: RateLimiter
    body_bytes: RateLimiter  # per address
    unverified_bytes: RateLimiter  # per participant ID

    @classmethod
    def from_settings(cls, settings: Settings) -> ParticipantLimits:
        # RATE_LIMIT_PER_MINUTE=0 switches every per-address limit off (load benchmarks rely on it).
        on = bool(settings.rate_limit_per_minute)
        per_hour = settings.new_participants_per_hour if on else 0
        bytes_per_hour = settings.upload_bytes_per_address_per_hour if on else 0
        unverified = settings.unverified_bytes_per_participant_per_hour
        return cls(
            RateLimiter.from_settings(settings),
            RateLimiter(per_hour / 60.0, max(1, per_hour)),
            _hourly(bytes_per_hour),
            _hourly(unverified),
        )

    def charge_body(self, client: str, size: int) -> None:
        """Take ``size`` bytes of ``client``'s hourly byte budget, or raise ``RateLimited``."""
        wait = self.body_bytes.wait_seconds(client, size)
        if wait > 0:
            raise RateLimited(
                "this address has sent too much data this hour; please retry later",
                retry_after=max(1, math.ceil(wait)),
            )

    def charge_unverified(self, participant_id: str, size: int) -> None:
        """Take ``size`` bytes of the participant's unverified budget, or raise ``RateLimited``."""
        wait = self.unverified_bytes.wait_seconds(participant_id, size)
        if wait > 0:
            raise RateLimited(
                "too much data without this participant's key this hour; please retry later",
                retry_after=max(1, math.ceil(wait)),
            )

    def admit_new_participant(self, client: str) -> Callable[[], None]:
        """Take a new-participant token for ``client``, or raise ``RateLimited``.

        Returns what gives the token back: the upload service takes it before it tries to create
        a participant's ``status.json`` and returns it when the participant existed after all.
        """
        wait = self.new_participants.wait_seconds(client)
        if wait > 0:
            raise RateLimited(
                "too many new participants from this address; please retry later",
                retry_after=max(1, math.ceil(wait)),
            )
        return lambda: self.new_participants.give_back(client)
