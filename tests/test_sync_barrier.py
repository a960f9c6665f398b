"""The local store's group-commit barrier: a wait returns only after a sync that began after it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from collector.storage.local import SyncBarrier


class RecordingSync:
    """A stand-in for ``syncfs`` that counts syncs begun and finished, and can fail on request."""

    def __init__(self, fail_first: int = 0) -> None:
        self.started = 0
        self.finished = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.started += 1
            fail = self.started <= self.fail_first
        time.sleep(0.002)  # long enough for others to arrive and share the next sync
        if fail:
            raise OSError(5, "Input/output error")
        with self.lock:
            self.finished += 1


def run_waiters(barrier: SyncBarrier, sync: RecordingSync, count: int) -> tuple[list[str], int]:
    problems: list[str] = []
    failures = 0
    guard = threading.Lock()
    go = threading.Barrier(count)

    def waiter() -> None:
        nonlocal failures
        go.wait()
        for _ in range(20):
            with sync.lock:
                begun_before = sync.started
            try:
                barrier.wait()
            except OSError:
                with guard:
                    failures += 1
                continue
            with sync.lock:
                # Syncs run one at a time, so the (begun_before + 1)-th began after this call.
                if sync.finished < begun_before + 1 - sync.fail_first:
                    problems.append(f"returned after {sync.finished} syncs, {begun_before} begun before")

    threads = [threading.Thread(target=waiter) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a waiter never woke"
    return problems, failures


def test_every_wait_is_covered_by_a_sync_that_began_after_it(tmp_path: Path) -> None:
    sync = RecordingSync()
    barrier = SyncBarrier(tmp_path, sync)
    problems, failures = run_waiters(barrier, sync, 32)
    assert problems == []
    assert failures == 0
    assert barrier.syncs == sync.finished
    assert barrier.syncs <= 32 * 20


@pytest.mark.parametrize("fail_first", [1, 3])
def test_a_failed_sync_raises_for_its_leader_and_the_others_are_synced_by_the_next(
    tmp_path: Path, fail_first: int
) -> None:
    sync = RecordingSync(fail_first=fail_first)
    barrier = SyncBarrier(tmp_path, sync)
    problems, failures = run_waiters(barrier, sync, 16)
    assert problems == []
    assert failures == fail_first  # only each failed sync's own leader sees the error
    assert sync.finished == barrier.syncs


def test_alone_a_wait_pays_one_sync(tmp_path: Path) -> None:
    sync = RecordingSync()
    barrier = SyncBarrier(tmp_path, sync)
    for _ in range(3):
        barrier.wait()
    assert (sync.started, barrier.syncs) == (3, 3)


def test_writes_in_one_block_share_the_last_barrier_and_are_durable_at_its_end(tmp_path: Path) -> None:
    from collector.storage.local import LocalStore

    store = LocalStore(tmp_path)
    store.put("a/one.json", b"1", if_absent=True)  # alone: two barriers
    alone = store._barrier.syncs
    with store.names_synced_at_end():
        store.put("a/two.json", b"2", if_absent=True)
        store.put("a/three.json", b"3")
        inside = store._barrier.syncs - alone
    assert (alone, inside, store._barrier.syncs - alone) == (2, 2, 3)  # 3 barriers, not 4
    assert store.get("a/two.json").body == b"2" and store.get("a/three.json").body == b"3"


# --- the committer: one thread syncs for every coroutine awaiting it ------------------------------


class ListingSync:
    """A stand-in for ``syncfs`` that records what each sync found in a folder (names of files)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: list[list[str]] = []

    def __call__(self) -> None:
        self.seen.append(sorted(p.name for p in self.folder.iterdir()) if self.folder.is_dir() else [])


def test_many_concurrent_async_writes_share_a_few_syncs(tmp_path: Path) -> None:
    from collector.storage.local import LocalStore

    sync = RecordingSync()  # 2 ms per sync: writers arriving meanwhile share the next one
    store = LocalStore(tmp_path, sync=sync)

    async def write_all() -> None:
        await asyncio.gather(
            *(store.put_async(f"p/{n}.json", b"x" * 3000, if_absent=True) for n in range(64))
        )

    asyncio.run(write_all())
    store.close()
    assert sorted(i.key for i in store.list("p/")) == sorted(f"p/{n}.json" for n in range(64))
    # 128 waits (a data and a name barrier each), served in batches: far fewer syncs than waits.
    assert sum(store._committer.batches) == 128
    assert store._committer.syncs == sync.finished <= 32
    assert max(store._committer.batches) >= 8
    assert store._barrier.syncs == 0  # no thread barrier: the committer did it all


def test_an_async_write_syncs_its_data_before_its_name_and_its_name_before_returning(tmp_path: Path) -> None:
    from collector.storage.local import LocalStore

    sync = ListingSync(tmp_path / "a")
    store = LocalStore(tmp_path, sync=sync)
    asyncio.run(store.put_async("a/one.json", b"1", if_absent=True))
    first, second = sync.seen
    assert len(first) == 1 and first[0].startswith(".one.json.tmp-")  # data synced, no name yet
    assert second == ["one.json"]  # then the name, before put_async returned

    sync.seen.clear()
    asyncio.run(store.put_async("a/one.json", b"2", if_match=store.get("a/one.json").etag))
    assert [len(s) for s in sync.seen] == [2, 1]  # the new data beside the old name, then the swap
    assert store.get("a/one.json").body == b"2"
    store.close()


def test_async_writes_in_one_block_share_the_last_sync_and_are_durable_at_its_end(tmp_path: Path) -> None:
    from collector.storage.local import LocalStore

    sync = ListingSync(tmp_path / "a")
    store = LocalStore(tmp_path, sync=sync)

    async def upload() -> int:
        async with store.names_synced_at_end_async():
            await store.put_async("a/two.json", b"2", if_absent=True)
            await store.put_async("a/three.json", b"3")
            inside = len(sync.seen)
        return inside

    assert asyncio.run(upload()) == 2  # the second name's sync is left to the block's end
    assert len(sync.seen) == 3  # 3 syncs, not 4
    assert "two.json" in sync.seen[1]  # the second write's data sync put the first name on disk
    assert sync.seen[2] == ["three.json", "two.json"]  # the last name, before the block exited
    store.close()


def test_a_sync_covers_only_waiters_that_arrived_before_it_began(tmp_path: Path) -> None:
    from collector.storage.committer import Committer

    started = [threading.Event(), threading.Event()]
    release = [threading.Event(), threading.Event()]
    calls: list[int] = []

    def sync() -> None:  # each of the first two syncs holds until the test releases it
        number = len(calls)
        calls.append(number)
        if number < 2:
            started[number].set()
            release[number].wait(10)

    committer = Committer(sync)

    async def scenario() -> bool:
        first = asyncio.ensure_future(committer.wait())
        await asyncio.to_thread(started[0].wait, 10)  # the first sync is under way
        late = asyncio.ensure_future(committer.wait())
        await asyncio.sleep(0.01)
        release[0].set()
        await first
        await asyncio.to_thread(started[1].wait, 10)
        late_answered_early = late.done()
        release[1].set()
        await late
        return late_answered_early

    assert asyncio.run(scenario()) is False  # the first sync did not answer a waiter that came later
    committer.close()
    assert committer.batches == [1, 1]


def test_a_failing_sync_fails_its_whole_batch_and_the_next_batch_is_synced_again(tmp_path: Path) -> None:
    from collector.storage.committer import Committer

    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def sync() -> None:
        calls.append(1)
        if len(calls) == 1:  # holds the committer while the batch under test queues
            started.set()
            release.wait(10)
        elif len(calls) == 2:
            raise OSError(5, "Input/output error")

    committer = Committer(sync)

    async def scenario() -> tuple[list[BaseException | None], list[BaseException | None]]:
        first = asyncio.ensure_future(committer.wait())
        await asyncio.to_thread(started.wait, 10)
        batch = [asyncio.ensure_future(committer.wait()) for _ in range(16)]
        await asyncio.sleep(0.01)
        release.set()
        await first
        failed = await asyncio.gather(*batch, return_exceptions=True)
        after = await asyncio.gather(*(committer.wait() for _ in range(4)), return_exceptions=True)
        return failed, after

    failed, after = asyncio.run(scenario())
    committer.close()
    assert committer.batches[:2] == [1, 16]
    assert all(isinstance(result, OSError) and result.errno == 5 for result in failed)
    assert after == [None] * 4  # the next sync succeeded, and answered its waiters


def test_a_failing_data_sync_stores_nothing_and_raises_storage_error(tmp_path: Path) -> None:
    from collector.storage import StorageError
    from collector.storage.local import LocalStore

    def failing_sync() -> None:
        raise OSError(5, "Input/output error")

    store = LocalStore(tmp_path, sync=failing_sync)

    async def writes() -> list[BaseException | str]:
        return await asyncio.gather(
            *(store.put_async(f"f/{n}.json", b"x", if_absent=True) for n in range(8)), return_exceptions=True
        )

    results = asyncio.run(writes())
    store.close()
    assert all(isinstance(result, StorageError) for result in results)
    assert list(store.list("f/")) == []  # no name points at data whose sync failed
    assert list(store.temporaries()) == []


def test_close_stops_the_committer_and_a_later_write_starts_it_again(tmp_path: Path) -> None:
    from collector.storage.local import LocalStore

    store = LocalStore(tmp_path, sync=RecordingSync())
    asyncio.run(store.put_async("c/1.json", b"1"))
    thread = store._committer._thread
    assert thread is not None and thread.is_alive()
    store.close()
    assert not thread.is_alive() and not store._committer.running
    asyncio.run(store.put_async("c/2.json", b"2"))
    store.close()
    assert [i.key for i in store.list("c/")] == ["c/1.json", "c/2.json"]
