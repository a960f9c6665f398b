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
    """A FastAPI dependency: ``APIRouter(dependencies=[Depends(RateLimiter(...))])``."""

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

    def wait_seconds(self, client: str) -> float:
        """Take a token for ``client``: 0.0 if admitted, else how long until one is available."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)  # re-inserted: now the most recently seen
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait

    async def __call__(self, request: Request) -> None:
        # Async on purpose: it runs on the event loop, so it costs no thread round trip.
        wait = self.wait_seconds(client_address(request))
        if wait > 0:
            raise too_many_uploads(wait)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def too_many_uploads(wait: float) -> RateLimited:
    return RateLimited(
        "too many uploads from this address; please retry later", retry_after=max(1, math.ceil(wait))
    )


@dataclass(frozen=True)
class ParticipantLimits:
    """The participant API's per-address limits: requests (and batch items), and new participants."""

    uploads: RateLimiter
    new_participants: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> ParticipantLimits:
        # RATE_LIMIT_PER_MINUTE=0 switches every per-address limit off (load benchmarks rely on it).
        per_hour = settings.new_participants_per_hour if settings.rate_limit_per_minute else 0
        return cls(
            RateLimiter.from_settings(settings),
            RateLimiter(per_hour / 60.0, max(1, per_hour)),
        )

    def admit_new_participant(self, client: str) -> None:
        """Take a new-participant token for ``client``, or raise ``RateLimited``."""
        wait = self.new_participants.wait_seconds(client)
        if wait > 0:
            raise RateLimited(
                "too many new participants from this address; please retry later",
                retry_after=max(1, math.ceil(wait)),
            )
