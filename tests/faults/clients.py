"""Clients that behave like the browser module (``js/data-uploader.js``), over raw HTTP/1.1.

Each upload is made once, with its ``uploadId`` and ``timestamp`` fixed at creation, and sent
again, byte for byte, until the collector answers 200 (stored) or a 4xx other than 429 (never
storable), with exponential backoff and full jitter, never sooner than ``Retry-After``.
A client gives up on an upload only after ``give_up_seconds``: the verdict counts those.

The HTTP client is a minimal keep-alive HTTP/1.1 over asyncio streams, so the load generator
spends its CPU on requests, not on a client library.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

UPLOAD_PATH = "/api/upload-user-data"


class HttpConnection:
    """One keep-alive connection, reopened after any failure."""

    def __init__(self, host: str, port: int, *, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and body; raises ``OSError``/``TimeoutError`` on failure."""
        try:
            return await asyncio.wait_for(self._post(path, body), self.timeout)
        except BaseException:
            self.close()  # never reuse a connection in an unknown state
            raise

    async def _post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            payload = await self._reader.readexactly(int(headers["content-length"]))
        else:
            payload = await self._reader.read()
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, payload

    def close(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None


@dataclass(frozen=True)
class RetryPolicy:
    """The browser module's schedule, scaled down so tests finish (it uses 2 s base, 5 min cap)."""

    base_delay: float = 0.05
    max_delay: float = 1.0
    request_timeout: float = 15.0  # the browser's timeoutMs
    give_up_seconds: float = 120.0  # a browser never gives up; a bounded harness must

    def delay(self, attempt: int, retry_after: float, rng: random.Random) -> float:
        jittered = rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
        return max(jittered, min(retry_after, self.max_delay))


@dataclass
class Upload:
    """One upload as the client made it, and what became of it. Bodies are kept as digests."""

    upload_id: str
    participant_id: str
    upload_type: str
    timestamp: str
    body: bytes | None  # dropped once answered, to keep 100,000 uploads in memory cheaply
    digest: str  # of the whole document
    status_digest: str  # of the document without submissionData: what status.json holds
    outcome: str = "pending"  # acknowledged | rejected | abandoned
    stored_key: str | None = None  # the submission key the 200 named
    attempts: int = 0


def digest(document: dict[str, Any]) -> str:
    """Content digest that ignores key order and the fields the server adds."""
    plain = {k: v for k, v in document.items() if k != "serverReceivedAt"}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def make_uploads(
    count: int,
    *,
    participants: int,
    prefix: str,
    submission_share: float = 0.5,
    payload_bytes: int = 600,
    seed: int = 1,
    base_time: datetime | None = None,
) -> list[Upload]:
    """Uploads 10 ms apart from random participants: same-second submissions happen, on purpose."""
    rng = random.Random(seed)
    start = base_time or datetime(2025, 11, 19, 14, 0, 0, tzinfo=UTC)
    filler = "x" * payload_bytes
    uploads = []
    for n in range(count):
        pid = f"{prefix}{rng.randrange(participants):05d}"
        kind = "submission" if rng.random() < submission_share else "status"
        moment = start + timedelta(milliseconds=10 * n)
        document: dict[str, Any] = {
            "participantId": pid,
            "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "uploadType": kind,
            "uploadId": f"{prefix}-{seed}-{n}",
            "totalSessionsStarted": n,
            "hasSeenWelcome": True,
            "sessionHistory": [{"sessionId": f"s{n}", "completed": True}],
        }
        if kind == "submission":
            document["submissionData"] = {"n": n, "responses": {"q1": n % 7, "note": filler}}
        uploads.append(
            Upload(
                upload_id=document["uploadId"],
                participant_id=pid,
                upload_type=kind,
                timestamp=document["timestamp"],
                body=json.dumps(document).encode(),
                digest=digest(document),
                status_digest=digest({k: v for k, v in document.items() if k != "submissionData"}),
            )
        )
    return uploads


@dataclass
class ClientStats:
    """What the clients saw: answers by HTTP status (0 = no answer), latencies of 200s."""

    answers: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, per request answered 200
    acknowledged: int = 0
    rejected: int = 0
    abandoned: int = 0

    @property
    def retries(self) -> int:
        return sum(self.answers.values()) - self.acknowledged - self.rejected

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run_clients(
    uploads: Iterable[Upload],
    *,
    host: str,
    port: int,
    concurrency: int,
    policy: RetryPolicy,
    stats: ClientStats,
    seed: int = 7,
    on_answered: Callable[[Upload], None] | None = None,
) -> None:
    """Send every upload with ``concurrency`` connections, each retried like the browser does."""
    queue: asyncio.Queue[Upload] = asyncio.Queue()
    for upload in uploads:
        queue.put_nowait(upload)

    async def worker(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        connection = HttpConnection(host, port, timeout=policy.request_timeout)
        try:
            while not queue.empty():
                upload = queue.get_nowait()
                await _deliver(upload, connection, policy, stats, rng)
                if on_answered is not None:
                    on_answered(upload)
        finally:
            connection.close()

    await asyncio.gather(*(worker(n) for n in range(concurrency)))


async def _deliver(
    upload: Upload, connection: HttpConnection, policy: RetryPolicy, stats: ClientStats, rng: random.Random
) -> None:
    assert upload.body is not None
    give_up_at = time.monotonic() + policy.give_up_seconds
    while True:
        upload.attempts += 1
        sent = time.perf_counter()
        retry_after = 0.0
        try:
            status, headers, payload = await connection.post(UPLOAD_PATH, upload.body)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status = 0
        stats.answers[status] += 1
        if status == 200:
            answer = json.loads(payload)
            if answer.get("status") == "success":  # only the collector's own success counts
                stats.latencies.append(time.perf_counter() - sent)
                stats.acknowledged += 1
                upload.outcome = "acknowledged"
                files = answer.get("filesUploaded", [])
                upload.stored_key = next((f for f in files if "/submissions/" in f), None)
                break
        elif 400 <= status < 500 and status != 429:
            stats.rejected += 1
            upload.outcome = "rejected"
            break
        elif status:
            retry_after = _seconds(headers.get("retry-after"))
        delay = policy.delay(upload.attempts - 1, retry_after, rng)
        if time.monotonic() + delay > give_up_at:
            stats.abandoned += 1
            upload.outcome = "abandoned"
            break
        await asyncio.sleep(delay)
    upload.body = None


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
