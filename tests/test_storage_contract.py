"""The ObjectStore contract, run against every backend: memory, local folder, S3 (moto)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from collector.storage import (
    AlreadyExists,
    LocalStore,
    MemoryStore,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StorageError,
    open_store,
)
from tests.support.settings import s3_settings


@pytest.fixture(params=["memory", "local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "local":
        yield LocalStore(tmp_path / "root")
    else:
        store = open_store(s3_settings(request.getfixturevalue("moto_endpoint")))
        yield store
        store.close()


def test_create_if_absent_refuses_an_existing_key(any_store: ObjectStore) -> None:
    etag = any_store.put("a/b.json", b"one", if_absent=True)
    with pytest.raises(AlreadyExists):
        any_store.put("a/b.json", b"two", if_absent=True)
    stored = any_store.get("a/b.json")
    assert stored.body == b"one"
    assert stored.etag == etag


def test_compare_and_swap_needs_the_current_etag(any_store: ObjectStore) -> None:
    first = any_store.put("s.json", b"v1")
    second = any_store.put("s.json", b"v2", if_match=first)
    with pytest.raises(PreconditionFailed):
        any_store.put("s.json", b"v3", if_match=first)  # stale
    assert any_store.get("s.json").body == b"v2"
    assert any_store.get("s.json").etag == second


def test_compare_and_swap_on_a_missing_key_fails(any_store: ObjectStore) -> None:
    with pytest.raises(PreconditionFailed):
        any_store.put("missing.json", b"x", if_match="0123456789abcdef0123456789abcdef")
    assert any_store.get_or_none("missing.json") is None


def test_get_of_a_missing_key(any_store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        any_store.get("nope/x.json")


def test_list_is_by_prefix_in_key_order(any_store: ObjectStore) -> None:
    for key in ["p/b/2.json", "p/a/1.json", "p/b/1.json", "q/x.json", "pa/y.json"]:
        any_store.put(key, key.encode())
    assert [i.key for i in any_store.list("p/")] == ["p/a/1.json", "p/b/1.json", "p/b/2.json"]
    assert [i.key for i in any_store.list("p/b/")] == ["p/b/1.json", "p/b/2.json"]
    assert [i.size for i in any_store.list("q/")] == [len(b"q/x.json")]
    assert list(any_store.list("zzz/")) == []


def test_racing_creates_have_exactly_one_winner(any_store: ObjectStore) -> None:
    def create(n: int) -> bool:
        try:
            any_store.put("race/one.json", f"writer {n}".encode(), if_absent=True)
            return True
        except AlreadyExists:
            return False

    with ThreadPoolExecutor(16) as pool:
        wins = list(pool.map(create, range(32)))
    assert wins.count(True) == 1


def test_racing_compare_and_swaps_lose_no_increment(any_store: ObjectStore) -> None:
    any_store.put("counter.json", b"0")

    def increment(_: int) -> None:
        while True:
            current = any_store.get("counter.json")
            try:
                any_store.put("counter.json", str(int(current.body) + 1).encode(), if_match=current.etag)
                return
            except PreconditionFailed:
                continue

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(increment, range(24)))
    assert any_store.get("counter.json").body == b"24"


# Every way out of the root, or onto a temporary's name: an empty part (leading, trailing or doubled
# "/"), "." or "..", a part starting with ".".
ESCAPING_KEYS = [
    "../escape.json",
    "x/../../escape.json",
    "..",
    "/abs.json",
    "x//y.json",
    "x/",
    "x/./y.json",
    "x/.hidden",
    ".hidden.json",
    "x/.y.json.tmp-1-2",
    "",
]


def test_local_store_leaves_no_temporaries_and_refuses_escaping_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("x/y.json", b"1", if_absent=True)
    store.put("x/y.json", b"2")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y.json"]
    for key in ESCAPING_KEYS:
        with pytest.raises(StorageError):
            store.put(key, b"no")
    assert not (tmp_path.parent / "escape.json").exists()


def test_local_store_makes_missing_folders_again_and_refuses_a_file_as_a_folder(tmp_path: Path) -> None:
    # The temporary is opened first and folders are made only when that open finds one missing:
    # a root that does not exist yet, several new levels, and folders an erasure pruned.
    store = LocalStore(tmp_path / "new" / "root")
    store.put("a/b/c/one.json", b"1", if_absent=True)
    store.delete("a/b/c/one.json")
    store.prune_empty_folders("a/")
    assert not (tmp_path / "new" / "root" / "a").exists()
    store.put("a/b/c/two.json", b"2", if_absent=True)

    async def scenario() -> None:
        await store.delete_async("a/b/c/two.json")
        store.prune_empty_folders("a/")
        await store.put_async("a/b/c/three.json", b"3", if_absent=True)
        store.put("f.json", b"a file")
        with pytest.raises(StorageError):
            await store.put_async("f.json/x.json", b"no", if_absent=True)

    asyncio.run(scenario())
    store.close()
    with pytest.raises(StorageError):
        store.put("f.json/y/x.json", b"no")
    assert [i.key for i in store.list("")] == ["a/b/c/three.json", "f.json"]
    assert store.get("a/b/c/three.json").body == b"3"
    assert [p.name for p in (tmp_path / "new").rglob(".*")] == []


def test_local_store_hides_interrupted_writes_from_listing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("d/real.json", b"{}")
    (tmp_path / "d" / ".real.json.tmp-deadbeef").write_bytes(b"{half")  # a crash mid-write
    assert [i.key for i in store.list("d/")] == ["d/real.json"]


def test_delete_removes_the_object_and_only_it(any_store: ObjectStore) -> None:
    any_store.put("d/a/1.json", b"one")
    any_store.put("d/a/2.json", b"two")
    any_store.put("d/a1/1.json", b"neighbour")
    any_store.delete("d/a/1.json")
    assert any_store.get_or_none("d/a/1.json") is None
    assert [i.key for i in any_store.list("d/")] == ["d/a/2.json", "d/a1/1.json"]
    # A deleted key can be created again, and create-if-absent sees it as absent.
    any_store.put("d/a/1.json", b"again", if_absent=True)
    assert any_store.get("d/a/1.json").body == b"again"


def test_delete_is_idempotent(any_store: ObjectStore) -> None:
    any_store.put("d/x.json", b"x")
    any_store.delete("d/x.json")
    any_store.delete("d/x.json")  # deleting twice is fine
    any_store.delete("never/was/there.json")  # so is a key (or folder) that never existed
    assert list(any_store.list("d/")) == []
    with pytest.raises(PreconditionFailed):
        any_store.put("d/x.json", b"y", if_match="0123456789abcdef0123456789abcdef")


def test_local_store_delete_refuses_escaping_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    (tmp_path / "outside.json").write_bytes(b"keep")
    with pytest.raises(StorageError):
        store.delete("../outside.json")
    assert (tmp_path / "outside.json").read_bytes() == b"keep"


# --- the same contract through the async forms the upload path awaits -----------------------------


def test_async_create_if_absent_refuses_an_existing_key(any_store: ObjectStore) -> None:
    async def scenario() -> None:
        etag = await any_store.put_async("a/b.json", b"one", if_absent=True)
        with pytest.raises(AlreadyExists):
            await any_store.put_async("a/b.json", b"two", if_absent=True)
        stored = await any_store.get_async("a/b.json")
        assert (stored.body, stored.etag) == (b"one", etag)

    asyncio.run(scenario())
    assert any_store.get("a/b.json").body == b"one"  # the sync view agrees


def test_async_compare_and_swap_needs_the_current_etag(any_store: ObjectStore) -> None:
    async def scenario() -> None:
        first = await any_store.put_async("s.json", b"v1")
        second = await any_store.put_async("s.json", b"v2", if_match=first)
        with pytest.raises(PreconditionFailed):
            await any_store.put_async("s.json", b"v3", if_match=first)  # stale
        with pytest.raises(PreconditionFailed):
            await any_store.put_async("missing.json", b"x", if_match=first)
        stored = await any_store.get_async("s.json")
        assert (stored.body, stored.etag) == (b"v2", second)
        with pytest.raises(ObjectNotFound):
            await any_store.get_async("missing.json")
        assert await any_store.get_or_none_async("missing.json") is None

    asyncio.run(scenario())


def test_async_racing_creates_have_exactly_one_winner(any_store: ObjectStore) -> None:
    async def create(n: int) -> bool:
        try:
            await any_store.put_async("race/one.json", f"writer {n}".encode(), if_absent=True)
            return True
        except AlreadyExists:
            return False

    async def race() -> list[bool]:
        return await asyncio.gather(*(create(n) for n in range(32)))

    wins = asyncio.run(race())
    assert wins.count(True) == 1
    assert any_store.get("race/one.json").body == f"writer {wins.index(True)}".encode()


def test_async_and_threaded_compare_and_swaps_together_lose_no_increment(any_store: ObjectStore) -> None:
    """Coroutines on the loop and threads with the sync API race on one counter: each lands once."""
    any_store.put("counter.json", b"0")

    def increment(_: int) -> None:
        while True:
            current = any_store.get("counter.json")
            try:
                any_store.put("counter.json", str(int(current.body) + 1).encode(), if_match=current.etag)
                return
            except PreconditionFailed:
                continue

    async def increment_async() -> None:
        while True:
            current = await any_store.get_async("counter.json")
            try:
                new = str(int(current.body) + 1).encode()
                await any_store.put_async("counter.json", new, if_match=current.etag)
                return
            except PreconditionFailed:
                await asyncio.sleep(0)  # let the others through

    async def both() -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(4) as pool:
            threaded = [loop.run_in_executor(pool, increment, n) for n in range(12)]
            await asyncio.gather(*threaded, *(increment_async() for _ in range(24)))

    asyncio.run(both())
    assert any_store.get("counter.json").body == b"36"


def test_async_delete_and_a_names_synced_block(any_store: ObjectStore) -> None:
    async def scenario() -> None:
        async with any_store.names_synced_at_end_async():
            await any_store.put_async("d/a.json", b"a", if_absent=True)
            await any_store.put_async("d/b.json", b"b")
        await any_store.delete_async("d/a.json")
        await any_store.delete_async("d/a.json")  # idempotent
        await any_store.delete_async("never/was.json")

    asyncio.run(scenario())
    assert [i.key for i in any_store.list("d/")] == ["d/b.json"]


def test_local_store_async_writes_leave_no_temporaries_and_refuse_escaping_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)

    async def scenario() -> None:
        await store.put_async("x/y.json", b"1", if_absent=True)
        await store.put_async("x/y.json", b"2")
        for key in ESCAPING_KEYS:
            with pytest.raises(StorageError):
                await store.put_async(key, b"no")
            with pytest.raises(StorageError):
                await store.get_async(key)

    asyncio.run(scenario())
    store.close()
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y.json"]
    assert store.get("x/y.json").body == b"2"
    assert not (tmp_path.parent / "escape.json").exists()
