"""The async forms through the wrapper stores: retries and one shared deadline, the conditional-write
gate, forwarding that never skips a wrapper's change, and two processes sharing one folder."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.metrics import Metrics
from collector.storage import (
    ConditionalWriteGate,
    LocalStore,
    MemoryStore,
    ObjectStore,
    RetryingStore,
    StoredObject,
    TransientStorageError,
)
from collector.storage.base import ForwardingStore
from collector.storage.retrying import shared_deadline
from tests.support.fake_clock import FakeClock


class FlakyStore(ObjectStore):
    """Async calls take 0.5 s each (on the fake clock); the first ``failures`` fail transiently."""

    def __init__(self, clock: FakeClock, failures: int) -> None:
        self.inner, self.clock, self.failures, self.calls = MemoryStore(), clock, failures, 0
        self.sync_calls = 0

    async def _turn(self) -> None:
        self.calls += 1
        self.clock.now += 0.5
        if self.calls <= self.failures:
            raise TransientStorageError("injected")

    async def put_async(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        await self._turn()
        return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    async def get_async(self, key: str) -> StoredObject:
        await self._turn()
        return self.inner.get(key)

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        self.sync_calls += 1
        return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    def get(self, key: str) -> StoredObject:
        self.sync_calls += 1
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator:
        return self.inner.list(prefix)

    def check(self) -> None:
        return None


def retrying(inner: ObjectStore, clock: FakeClock, metrics: Metrics | None = None) -> RetryingStore:
    return RetryingStore(
        inner, metrics or Metrics(), deadline_seconds=2.0, async_sleep=clock.sleep_async, clock=clock
    )


def counter(metrics: Metrics, name: str, operation: str) -> float:
    return getattr(metrics, name).labels(operation)._value.get()


def test_async_calls_are_retried_on_the_loop_and_counted() -> None:
    clock, metrics = FakeClock(), Metrics()
    inner = FlakyStore(clock, failures=2)
    store = retrying(inner, clock, metrics)
    asyncio.run(store.put_async("k.json", b"1", if_absent=True))
    assert inner.calls == 3 and inner.sync_calls == 0  # async all the way down: no thread
    assert counter(metrics, "storage_retries", "put") == 2
    assert counter(metrics, "storage_failures", "put") == 0
    assert inner.inner.get("k.json").body == b"1"


def test_async_calls_of_one_upload_share_one_deadline() -> None:
    clock, metrics = FakeClock(), Metrics()
    store = retrying(FlakyStore(clock, failures=10**6), clock, metrics)

    async def upload() -> None:
        with shared_deadline(2.0, clock):
            for key in ("a.json", "b.json", "c.json"):
                with pytest.raises(TransientStorageError):
                    await store.put_async(key, b"1")

    asyncio.run(upload())
    # The first call spends the upload's 2 s; the others answer at once instead of 2 s each.
    assert clock.now < 2.0 + 0.5 + 1.0
    assert counter(metrics, "storage_failures", "put") == 3


def test_a_sync_call_handed_to_a_thread_draws_on_the_tasks_deadline() -> None:
    """The default async form runs the sync method in a thread, which sees the task's deadline."""
    clock = FakeClock()

    class Failing(MemoryStore):
        def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
            clock.now += 0.5
            raise TransientStorageError("injected")

    class ThreadedOnly(ForwardingStore):  # changes put only: its put_async runs it in a thread
        def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
            return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    inner = RetryingStore(Failing(), Metrics(), deadline_seconds=2.0, sleep=clock.advance, clock=clock)
    store = ThreadedOnly(inner)

    async def upload() -> float:
        with shared_deadline(2.0, clock):
            with pytest.raises(TransientStorageError):
                await store.put_async("a.json", b"1")
            spent = clock.now
            with pytest.raises(TransientStorageError, match="deadline passed"):
                await store.put_async("b.json", b"1")
        return spent

    spent = asyncio.run(upload())
    assert 2.0 <= spent < 2.0 + 0.5 + 1.0
    assert clock.now == spent  # the second call answered at once: the budget was the task's


def test_forwarding_never_skips_a_wrapper_that_changes_only_the_sync_method() -> None:
    class Refusing(ForwardingStore):
        def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
            raise TransientStorageError(f"refused in {threading.current_thread().name}")

    plain = ForwardingStore(MemoryStore())
    refusing = Refusing(MemoryStore())

    async def scenario() -> None:
        await plain.put_async("a.json", b"1")  # a plain forwarder goes straight to inner's async
        with pytest.raises(TransientStorageError) as refused:
            await refusing.put_async("a.json", b"1")
        assert "MainThread" not in str(refused.value)  # run in a worker thread, off the loop

    asyncio.run(scenario())
    assert plain.inner.get("a.json").body == b"1"
    assert refusing.inner.get_or_none("a.json") is None
    assert Refusing._sync_only == frozenset({"put"}) and ForwardingStore._sync_only == frozenset()


def test_the_gate_proves_in_a_thread_then_passes_async_calls_through() -> None:
    class Bucket(ForwardingStore):
        def __init__(self) -> None:
            super().__init__(MemoryStore())
            self.down = False
            self.proof_threads: set[str] = set()

        def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
            self.proof_threads.add(threading.current_thread().name)
            return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

        async def put_async(
            self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
        ) -> str:
            if self.down:
                raise TransientStorageError("down")
            return await self.inner.put_async(key, body, if_absent=if_absent, if_match=if_match)

    bucket = Bucket()
    gate = ConditionalWriteGate(bucket, "probe.json")

    async def scenario() -> None:
        await gate.put_async("a.json", b"1", if_absent=True)
        assert gate.proven
        bucket.down = True
        with pytest.raises(TransientStorageError):
            await gate.put_async("b.json", b"1")
        assert not gate.proven  # an outage: proven again before the next call passes
        bucket.down = False
        await gate.put_async("b.json", b"1")
        assert gate.proven

    asyncio.run(scenario())
    assert bucket.proof_threads and "MainThread" not in bucket.proof_threads  # never on the loop
    assert bucket.inner.get("b.json").body == b"1"


def test_an_async_compare_and_swap_waits_for_a_held_folder_lock_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    from collector.storage.local import _locked

    store = LocalStore(tmp_path)
    first = store.put("d/s.json", b"1")
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # another writer (a thread here, a process in production)
        with _locked(tmp_path / "d"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait(10)

    async def scenario() -> int:
        swap = asyncio.ensure_future(store.put_async("d/s.json", b"2", if_match=first))
        ticks = 0
        while ticks < 20:  # the loop keeps running while the swap waits for the lock
            await asyncio.sleep(0.005)
            ticks += 1
        assert not swap.done()
        release.set()
        await swap
        return ticks

    assert asyncio.run(scenario()) == 20
    holder.join(10)
    store.close()
    assert store.get("d/s.json").body == b"2"


TWO_PROCESS_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from collector.storage import AlreadyExists, LocalStore, PreconditionFailed

    async def main(root, name):
        store = LocalStore(Path(root))

        async def increment():
            while True:
                current = await store.get_async("shared/counter.json")
                try:
                    new = str(int(current.body) + 1).encode()
                    await store.put_async("shared/counter.json", new, if_match=current.etag)
                    return
                except PreconditionFailed:
                    await asyncio.sleep(0)

        async def create(n):
            try:
                await store.put_async("shared/once.json", f"{name} {n}".encode(), if_absent=True)
                return 1
            except AlreadyExists:
                return 0

        results = await asyncio.gather(*(increment() for _ in range(40)), *(create(n) for n in range(20)))
        store.close()
        print(sum(r for r in results if r))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.processes
def test_two_processes_sharing_a_folder_stay_exactly_once(tmp_path: Path) -> None:
    """Compare-and-swap under the folder lock (taken without blocking) and create-if-absent across
    two processes: no increment lost, one creator."""
    LocalStore(tmp_path).put("shared/counter.json", b"0")
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_PROCESS_WRITER, str(tmp_path), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("one", "two")
    ]
    outputs = [writer.communicate(timeout=120) for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], [err for _, err in outputs]
    assert sum(int(out) for out, _ in outputs) == 1  # one create won, across both processes
    store = LocalStore(tmp_path)
    assert store.get("shared/counter.json").body == b"80"
    assert store.get("shared/once.json").body.split()[0].decode() in ("one", "two")
    assert list(store.temporaries()) == []


S3_ASYNC_USER = textwrap.dedent(
    """
    import asyncio, sys
    from collector.metrics import Metrics
    from collector.storage import RetryingStore, S3Store

    bucket = S3Store(
        sys.argv[2], endpoint_url=sys.argv[1], access_key_id="test", secret_access_key="test",
        region="us-east-1",
    )
    store = RetryingStore(bucket, Metrics(), deadline_seconds=30)  # moto answers 500 under load

    async def main():
        etags = await asyncio.gather(*(store.put_async(f"exit/{n}.json", b"x" * 3000) for n in range(40)))
        read = await asyncio.gather(*(store.get_async(f"exit/{n}.json") for n in range(40)))
        assert [r.etag for r in read] == etags

    asyncio.run(main())
    store.close()
    print("done")
    """
)


@pytest.mark.processes
def test_a_process_that_used_the_async_s3_client_exits_cleanly(moto_endpoint: str) -> None:
    """obstore's async calls aborted the interpreter at exit in 5 to 11 plain script runs in 30
    (docs/reliability.md); ``S3Store.close`` lets its threads settle. Nine runs, each must exit 0."""
    from tests.faults.scenarios import make_bucket

    bucket = make_bucket(moto_endpoint)
    codes: list[tuple[int, str]] = []
    for _ in range(3):  # three at a time: a loaded machine is where an exit race shows
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", S3_ASYNC_USER, moto_endpoint, bucket],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        for run in runs:
            out, err = run.communicate(timeout=120)
            codes.append((run.returncode, out.strip() or err[-500:]))
    assert codes == [(0, "done")] * 9


KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from collector.storage import LocalStore

    store = LocalStore(Path(sys.argv[1]))

    async def writer(number):
        for n in range(10_000):
            key = f"w{number}/{n}.json"
            async with store.names_synced_at_end_async():
                await store.put_async(key, (key * 200).encode(), if_absent=True)
                await store.put_async(f"w{number}/status.json", key.encode())
            print(key, flush=True)  # acknowledged: what a 200 would say

    async def main():
        await asyncio.gather(*(writer(number) for number in range(16)))

    asyncio.run(main())
    """
)


@pytest.mark.processes
def test_every_acknowledged_async_write_is_whole_after_a_sigkill(tmp_path: Path) -> None:
    """SIGKILL mid-stream: each write answered before the kill is there, whole; nothing half-written
    is visible (a power cut is what the syncs are for; this is the crash the tests can make)."""
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    acknowledged = [writer.stdout.readline().strip() for _ in range(300)]
    writer.kill()
    acknowledged += [line.strip() for line in writer.stdout if line.strip()]
    writer.wait(30)
    store = LocalStore(tmp_path, sweep_temporaries_older_than=None)
    assert "" not in acknowledged
    for key in acknowledged:
        assert store.get(key).body == (key * 200).encode()
    for info in store.list(""):
        if not info.key.endswith("status.json"):
            assert store.get(info.key).body == (info.key * 200).encode()  # never half an object


def test_a_store_says_whether_its_async_calls_are_its_own_through_any_wrapper(tmp_path: Path) -> None:
    class SyncOnly(MemoryStore):  # the default async forms: a worker thread per call
        put_async = ObjectStore.put_async
        get_async = ObjectStore.get_async

    class ChangesPut(ForwardingStore):
        def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
            return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    local = LocalStore(tmp_path)
    assert local.native_async and MemoryStore().native_async
    assert retrying(local, FakeClock()).native_async
    assert ConditionalWriteGate(retrying(local, FakeClock()), "probe.json").native_async
    assert not SyncOnly().native_async
    assert not retrying(SyncOnly(), FakeClock()).native_async  # a wrapper is as native as its inner
    assert not ChangesPut(local).native_async  # its put runs in a thread

    class BlocksInPut(MemoryStore):  # changes the sync put below MemoryStore's own async forms
        def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
            return super().put(key, body, if_absent=if_absent, if_match=if_match)

    assert not BlocksInPut().native_async  # else its put_async would skip, or block the loop with, its put
