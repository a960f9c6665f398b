"""A clock that moves only when a test moves it, or when the code under test sleeps on it."""

from __future__ import annotations


class FakeClock:
    """``clock()`` reads the time; ``sleep``/``sleep_async`` (given to the code as its sleep) and
    ``advance`` move it at once, so retries, deadlines and freshness windows cost no real time."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    sleep = advance

    async def sleep_async(self, seconds: float) -> None:
        self.now += seconds
