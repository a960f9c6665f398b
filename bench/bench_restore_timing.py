"""Does restore take longer for a known ID with a wrong key than for an unknown one?

    python bench/bench_restore_timing.py [CHECKOUT]

Times CHECKOUT's (default: this one) restore decision, ``pipeline.restore.read_status`` (before
the pipeline: ``UploadService.read_status``), over an in-memory store answering on the event loop,
so only the collector's own work is measured: an unknown ID against a known ID
holding a 60 KB status, both with a wrong key. Median of 15 rounds of 200 calls. Run it against
an older checkout for a before figure.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

CHECKOUT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
sys.path.insert(0, str(CHECKOUT / "backend"))

from collector.errors import NotFound  # noqa: E402
from collector.keys import KeyLayout  # noqa: E402
from collector.participant_keys import key_hash  # noqa: E402
from collector.settings import Settings  # noqa: E402
from collector.storage import StoredObject  # noqa: E402
from collector.storage.memory import MemoryStore  # noqa: E402

try:
    from collector.pipeline.run import UploadPipeline as Service
except ImportError:  # a checkout from before the pipeline
    from collector.ingest import UploadService as Service  # type: ignore[no-redef]


class InlineStore(MemoryStore):
    """Answers ``get_async`` on the event loop: no worker thread's hop in the figure."""

    async def get_async(self, key: str) -> StoredObject:
        return self.get(key)


def microseconds_per_call(service: Service, participant_id: str) -> float:
    async def one() -> None:
        with suppress(NotFound):
            answer = service.read_status(participant_id, "w" * 22)
            if asyncio.iscoroutine(answer):
                await answer

    async def rounds() -> list[float]:
        times = []
        for _ in range(15):
            started = time.perf_counter()
            for _ in range(200):
                await one()
            times.append((time.perf_counter() - started) / 200 * 1e6)
        return times

    return statistics.median(asyncio.run(rounds()))


def main() -> None:
    store, layout = InlineStore(), KeyLayout("bench")
    status = {
        "participantId": "KNOWN1",
        "notes": "x" * 60_000,
        "participantKeyHash": key_hash("KNOWN1", "k" * 22),
    }
    store.put(layout.status_key("KNOWN1"), json.dumps(status, separators=(",", ":")).encode())
    settings = Settings()  # the defaults (and the environment), as the collector would use
    service = Service(
        store,
        layout,
        retry_after=settings.retry_after_seconds,
        deadline_seconds=settings.storage_deadline_seconds,
        participant_keys=settings.participant_keys,
        clock_skew=timedelta(seconds=settings.clock_skew_seconds),
    )
    unknown, known = microseconds_per_call(service, "NOBODY1"), microseconds_per_call(service, "KNOWN1")
    print(f"{CHECKOUT}: unknown ID {unknown:.1f} µs, known ID with a wrong key {known:.1f} µs per restore")


if __name__ == "__main__":
    main()
