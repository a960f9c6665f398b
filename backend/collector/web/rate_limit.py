"""Per-client rate limiting of the participant API: a token bucket per client address.

Each address may make ``burst`` requests at once and ``per_minute`` a minute sustained; beyond
that the request is refused with ``RateLimited`` (429 + ``Retry-After``) before its body is read.
The table of addresses is bounded (least recently seen dropped first), so many addresses cannot
grow memory without limit; a dropped address simply starts again with a full bucket.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import Request

from ..errors import RateLimited
from ..settings import Settings

MAX_TRACKED_CLIENTS = 50_000


class RateLimiter:
    """A FastAPI dependency: ``APIRouter(dependencies=[Depends(RateLimiter(...))])``."""

    def __init__(
        self,
        per_minute: int,
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
        # Async on purpose: it runs on the event loop, one request at a time, so it needs no lock.
        client = request.client.host if request.client else "unknown"
        wait = self.wait_seconds(client)
        if wait > 0:
            raise RateLimited(
                "too many uploads from this address; please retry later", retry_after=max(1, math.ceil(wait))
            )
