"""The local store's group-commit barrier: a wait returns only after a sync that began after it."""

from __future__ import annotations

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
