"""The gate's own rules, fast, over the in-memory store (the S3 behaviour is tests/test_conditional_probe.py):
one proof, again after an outage, never two at once, no stampede on a sick bucket."""

from __future__ import annotations

import threading

import pytest

from collector.storage import (
    ConditionalWriteGate,
    ConditionalWritesIgnored,
    MemoryStore,
    TransientStorageError,
)
from collector.storage.base import ForwardingStore, StoredObject
from collector.storage.conditional_probe import IF_MATCH, IF_NONE_MATCH

PROBE = "p/collector/conditional-write-probe.json"


class Bucket(ForwardingStore):
    """A memory store that can be down, slow, or ignore a condition; counts the puts it gets."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.down = False
        self.ignore: set[str] = set()
        self.puts = 0
        self.hold: threading.Event | None = None

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        self.puts += 1
        if self.hold is not None:
            self.hold.wait(5)
        if self.down:
            raise TransientStorageError("down")
        if "if-none-match" in self.ignore:
            if_absent = False
        if "if-match" in self.ignore:
            if_match = None
        return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    def get(self, key: str) -> StoredObject:
        if self.down:
            raise TransientStorageError("down")
        return self.inner.get(key)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_proven_once_then_every_call_passes_straight_through() -> None:
    bucket = Bucket()
    gate = ConditionalWriteGate(bucket, PROBE)
    gate.put("p/a", b"1")
    assert gate.proven and bucket.puts == 3 + 1  # the proof's three writes, then the call's
    gate.put("p/b", b"2")
    assert bucket.puts == 5


@pytest.mark.parametrize(("ignored", "named"), [("if-none-match", IF_NONE_MATCH), ("if-match", IF_MATCH)])
def test_a_bucket_ignoring_a_condition_is_refused_for_good(ignored: str, named: str) -> None:
    bucket = Bucket()
    bucket.ignore.add(ignored)
    gate = ConditionalWriteGate(bucket, PROBE)
    for _ in range(2):
        with pytest.raises(ConditionalWritesIgnored) as refused:
            gate.put("p/a", b"1")
        assert refused.value.condition == named
    bucket.ignore.clear()  # even once it behaves: what answers there cannot be trusted
    with pytest.raises(ConditionalWritesIgnored):
        gate.get("p/a")
    assert bucket.inner.get_or_none("p/a") is None


def test_after_an_outage_the_next_call_proves_again() -> None:
    bucket, clock = Bucket(), Clock()
    gate = ConditionalWriteGate(bucket, PROBE, clock=clock)
    gate.put("p/a", b"1")
    bucket.down = True
    with pytest.raises(TransientStorageError):
        gate.put("p/b", b"2")
    assert not gate.proven
    bucket.down = False
    bucket.ignore.add("if-none-match")  # something else answers now
    with pytest.raises(ConditionalWritesIgnored):
        gate.put("p/b", b"2")
    assert bucket.inner.get_or_none("p/b") is None


def test_a_failed_proof_is_not_retried_by_every_call_at_once() -> None:
    bucket, clock = Bucket(), Clock()
    bucket.down = True
    gate = ConditionalWriteGate(bucket, PROBE, reprobe_seconds=1.0, clock=clock)
    with pytest.raises(TransientStorageError):
        gate.put("p/a", b"1")
    asked = bucket.puts
    for _ in range(50):  # a burst of uploads within the pause: refused without asking the bucket
        with pytest.raises(TransientStorageError):
            gate.put("p/a", b"1")
    assert bucket.puts == asked
    bucket.down = False
    clock.now += 1.5
    gate.put("p/a", b"1")
    assert gate.proven


def test_while_one_call_proves_the_others_fail_fast_instead_of_queueing() -> None:
    bucket = Bucket()
    bucket.hold = threading.Event()
    gate = ConditionalWriteGate(bucket, PROBE)
    prover = threading.Thread(target=gate.put, args=("p/a", b"1"))
    prover.start()
    while bucket.puts == 0:  # the proof is under way, held by the bucket
        threading.Event().wait(0.01)
    with pytest.raises(TransientStorageError, match="not proven yet"):
        gate.get("p/a")
    bucket.hold.set()
    prover.join(5)
    assert gate.proven and gate.get("p/a").body == b"1"
