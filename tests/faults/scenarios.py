"""The fault scenarios, each run against a real collector process: small in the tests, large in
``bench/reliability.py``. ``run_scenario`` sets up the store, proxies and collector, runs
browser-like clients while the scenario's choreography injects faults, and returns the verdict.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import boto3

from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import LocalStore, ObjectStore, S3Store
from tests.faults.clients import ClientStats, RetryPolicy, Upload, make_uploads, run_clients
from tests.faults.collector import KillableCollector
from tests.faults.proxy import Fault, FaultPlan, FaultProxy
from tests.faults.verdict import Verdict, judge

# Distinctive, so a leak into a response or the log is found by a plain search.
ACCESS_KEY = "FAULTLABACCESSKEY7Q"
SECRET_KEY = "faultlab-secret-9b1e4c7d2a"
REGION = "us-east-1"


@dataclass(frozen=True)
class Size:
    uploads: int = 300
    participants: int = 40
    concurrency: int = 16
    policy: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class Lab:
    """Everything one scenario run holds; the choreography acts on it."""

    backend: str
    collector: KillableCollector
    storage_proxy: FaultProxy | None
    front_proxy: FaultProxy | None
    settings: Settings
    total: int
    answered: int = 0
    storage_deadline: float = 1.0

    async def reached(self, fraction: float) -> None:
        """Wait until this share of the uploads has its final answer (or all have)."""
        while self.answered < min(self.total, int(self.total * fraction)):
            await asyncio.sleep(0.02)

    def storage_plan(self, plan: FaultPlan) -> None:
        assert self.storage_proxy is not None
        self.storage_proxy.set_plan(plan)


@dataclass
class ScenarioResult:
    name: str
    backend: str
    verdict: Verdict
    stats: ClientStats
    faults: Counter[str]
    kills: int
    seconds: float
    log_leaks: list[str]

    @property
    def exercised(self) -> bool:
        """Did the faults really happen? A scenario that injected nothing proves nothing."""
        return bool(self.kills or any(k != "requests" for k in self.faults))

    @property
    def ok(self) -> bool:
        return (
            self.verdict.ok
            and self.exercised
            and not self.stats.abandoned
            and not self.stats.rejected
            and not self.stats.answers[500]
            and not self.log_leaks
        )


# --- choreographies: what goes wrong, and when -------------------------------------------------


async def storage_flaky(lab: Lab) -> None:
    """Storage answers 500/503, resets and stalls on a third of requests, then recovers."""
    lab.storage_plan(
        FaultPlan(
            {Fault.ERROR_500: 0.1, Fault.ERROR_503: 0.1, Fault.RESET: 0.1, Fault.STALL: 0.03},
            stall_seconds=lab.settings.storage_timeout_seconds * 2,
        )
    )
    await lab.reached(0.5)
    lab.storage_plan(FaultPlan())


async def storage_outage(lab: Lab) -> None:
    """Storage fails every request for three times the collector's deadline, then recovers."""
    await lab.reached(0.25)
    lab.storage_plan(
        FaultPlan(
            {Fault.ERROR_503: 0.4, Fault.RESET: 0.3, Fault.STALL: 0.3},
            stall_seconds=lab.settings.storage_timeout_seconds * 2,
        )
    )
    await asyncio.sleep(lab.storage_deadline * 3)
    lab.storage_plan(FaultPlan())


async def storage_lost_responses(lab: Lab) -> None:
    """A quarter of writes are applied by the store but their answers never reach the collector."""
    lab.storage_plan(FaultPlan({Fault.DROP_AFTER_WRITE: 0.25}, methods=frozenset({"PUT"})))


async def collector_sigkill(lab: Lab) -> None:
    """The collector is SIGKILLed twice in the middle of the load and restarted on its port."""
    for fraction in (0.3, 0.6):
        await lab.reached(fraction)
        lab.collector.kill()
        await asyncio.sleep(0.2)
        await asyncio.to_thread(lab.collector.restart)


async def answers_lost(lab: Lab) -> None:
    """A quarter of the collector's answers are lost on the way back: the client must retry."""
    assert lab.front_proxy is not None
    lab.front_proxy.set_plan(FaultPlan({Fault.DROP_AFTER_WRITE: 0.25}, methods=frozenset({"POST"})))


Choreography = Callable[[Lab], Awaitable[None]]
SCENARIOS: dict[str, tuple[Choreography, tuple[str, ...]]] = {
    "storage-flaky": (storage_flaky, ("s3",)),
    "storage-outage": (storage_outage, ("s3",)),
    "storage-lost-responses": (storage_lost_responses, ("s3",)),
    "collector-sigkill": (collector_sigkill, ("local", "s3")),
    "answers-lost": (answers_lost, ("local", "s3")),
}


def scenario_ids() -> list[tuple[str, str]]:
    return [(name, backend) for name, (_, backends) in SCENARIOS.items() for backend in backends]


# --- running one --------------------------------------------------------------------------------


def make_bucket(endpoint: str) -> str:
    name = f"faultlab-{uuid.uuid4().hex[:12]}"
    _s3_client(endpoint).create_bucket(Bucket=name)
    return name


def _s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def collector_settings(backend: str, workdir: Path, *, endpoint: str | None, bucket: str | None) -> Settings:
    """Short storage deadlines so an outage is longer than them; rate limiting off (one client IP)."""
    common: dict[str, object] = {
        "admin_password": "faultlab-admin-password-1",
        "storage_deadline_seconds": 1.0,
        "storage_timeout_seconds": 0.5,
        "retry_after_seconds": 1,
        "rate_limit_per_minute": 0,
    }
    if backend == "local":
        return Settings(local_storage_dir=workdir / "data", **common)
    return Settings(
        s3_endpoint_url=endpoint,
        r2_access_key_id=ACCESS_KEY,
        r2_secret_access_key=SECRET_KEY,
        s3_region=REGION,
        r2_bucket_name=bucket,
        **common,
    )


def direct_store(backend: str, settings: Settings, moto_endpoint: str | None) -> ObjectStore:
    """The store as it really is, bypassing the fault proxy."""
    if backend == "local":
        return LocalStore(settings.local_storage_dir)
    return S3Store(
        settings.r2_bucket_name,
        endpoint_url=moto_endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region=REGION,
        timeout_seconds=10,
    )


def run_scenario(
    name: str, backend: str, *, workdir: Path, moto_endpoint: str | None, size: Size, seed: int = 1
) -> ScenarioResult:
    """Run one scenario end to end and judge it."""
    choreography, _ = SCENARIOS[name]
    workdir.mkdir(parents=True, exist_ok=True)
    storage_proxy = front_proxy = None
    endpoint = bucket = None
    if backend == "s3":
        assert moto_endpoint is not None
        moto = urlsplit(moto_endpoint)
        storage_proxy = FaultProxy(moto.hostname or "127.0.0.1", moto.port or 80, seed=seed).start()
        endpoint, bucket = storage_proxy.url, make_bucket(moto_endpoint)
    settings = collector_settings(backend, workdir, endpoint=endpoint, bucket=bucket)
    log_path = workdir / f"collector-{name}-{backend}.log"
    collector = KillableCollector(settings, log_path=log_path).start()
    target_port = collector.port
    if name == "answers-lost":
        front_proxy = FaultProxy("127.0.0.1", collector.port, seed=seed).start()
        target_port = front_proxy.port
    uploads = make_uploads(
        size.uploads, participants=size.participants, prefix=f"{name[:3].upper()}{backend[0]}", seed=seed
    )
    lab = Lab(backend, collector, storage_proxy, front_proxy, settings, total=len(uploads))
    stats = ClientStats()
    started = time.monotonic()
    try:
        asyncio.run(_drive(lab, choreography, uploads, target_port, size, stats))
    finally:
        collector.stop()
        for proxy in (storage_proxy, front_proxy):
            if proxy is not None:
                proxy.stop()
    seconds = time.monotonic() - started
    store = direct_store(backend, settings, moto_endpoint)
    try:
        verdict = judge(
            store,
            KeyLayout(settings.data_prefix),
            uploads,
            local_root=settings.local_storage_dir if backend == "local" else None,
        )
    finally:
        store.close()
    faults: Counter[str] = Counter()
    for proxy in (storage_proxy, front_proxy):
        if proxy is not None:
            faults.update(proxy.counts)
    return ScenarioResult(
        name, backend, verdict, stats, faults, collector.kills, seconds, log_leaks(log_path)
    )


async def _drive(
    lab: Lab, choreography: Choreography, uploads: list[Upload], port: int, size: Size, stats: ClientStats
) -> None:
    def answered(_: Upload) -> None:
        lab.answered += 1

    clients = asyncio.create_task(
        run_clients(
            uploads,
            host="127.0.0.1",
            port=port,
            concurrency=size.concurrency,
            policy=size.policy,
            stats=stats,
            on_answered=answered,
        )
    )
    await choreography(lab)
    await clients


def log_leaks(log_path: Path) -> list[str]:
    """Lines of the collector's log that carry a stack trace or a storage credential."""
    if not log_path.exists():
        return []
    markers = ("Traceback", ACCESS_KEY, SECRET_KEY)
    lines = log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if any(marker in line for marker in markers)][:10]
