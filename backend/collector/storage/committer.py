"""Group commit for coroutines: one thread syncs the filesystem for every write awaiting it.

The local folder's async writes are made on the event loop (a few KB to the page cache does not
block), then ``await committer.wait()``: the waiting coroutine parks on an asyncio future, and
one committer thread per store runs, over and over::

    wait until a future is queued; take every queued future; syncfs once; resolve them all

Waiters are handed to the committer once per turn of the event loop (a ``call_soon`` queued by
the first of them), not one by one: the coroutines a sync woke run in one turn, write again, and
all share the next sync, rather than the committer syncing for the first one to come back while
the loop is still running the rest. Resolving a batch is one ``loop.call_soon_threadsafe`` per
event loop, not one per waiter, so a batch of 50 uploads costs one thread wake-up on each side,
where a thread per upload trading the GIL with the event loop cost about 200 futex calls and 24
context switches each.

A sync covers only writes made before it started: a future queued while a sync runs waits for
the next one. A failed sync fails every future of its batch (an ``OSError`` each, which the store
turns into ``StorageError``): none is ever told its write is durable when the sync did not say
so. The next batch tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Committer:
    """One thread that runs ``sync`` for batches of awaiting coroutines; started at the first wait."""

    def __init__(self, sync: Callable[[], None], *, name: str = "storage-committer") -> None:
        self._sync = sync
        self._name = name
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._arrived: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}  # this tick's
        self._waiting: list[_Waiter] = []  # handed over: the next sync covers them
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.syncs = 0  # syncs run, failed ones included (for tests and benchmarks: writes per sync)
        self.batches: list[int] = []  # waiters each sync served, the last few hundred

    async def wait(self) -> None:
        """Return once a sync that began after this call has finished; ``OSError`` if it failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            arrived = self._arrived.setdefault(loop, [])
            arrived.append(future)
            first = len(arrived) == 1
        if first:
            # Hand this tick's waiters over together, once the tasks running now have had their
            # turn: the coroutines one sync woke write again in the same tick, and share the next.
            loop.call_soon(self._hand_over, loop)
        await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            arrived = self._arrived.pop(loop, [])
            self._waiting.extend((loop, future) for future in arrived)
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            else:
                self._queued.notify()  # cheap when the committer is busy syncing: nobody waits on it

    def close(self) -> None:
        """Stop the thread once the queued waiters are served; a later ``wait`` starts a new one."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._stopping = True
            self._queued.notify()
        thread.join()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    self._queued.wait()
                if not self._waiting:  # stopping, and nobody is left to serve
                    self._thread = None  # a wait from now on starts a new committer
                    return
                batch, self._waiting = self._waiting, []
            # Everyone in the batch wrote before queueing, and queued before this sync begins.
            failure: OSError | None = None
            try:
                self._sync()
            except OSError as exc:
                failure = exc
                logger.error(
                    "❌ Syncing the storage folder failed; %d writes answer 503: %s", len(batch), exc
                )
            except BaseException as exc:  # never leave a waiter hanging, whatever the sync raised
                failure = OSError(f"sync failed: {exc!r}")
                logger.exception("❌ Syncing the storage folder raised")
            self.syncs += 1
            self.batches = [*self.batches[-255:], len(batch)]
            _resolve(batch, failure)


def _resolve(batch: list[_Waiter], failure: OSError | None) -> None:
    """Wake every waiter of ``batch``: one hand-over per event loop (usually there is one loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, future in batch:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting there
            loop.call_soon_threadsafe(_settle, futures, failure)


def _settle(futures: list[asyncio.Future[None]], failure: OSError | None) -> None:
    for future in futures:
        if future.done():  # cancelled while it waited (the client went away)
            continue
        if failure is None:
            future.set_result(None)
        else:
            # One exception object each: a shared one would collect every raiser's traceback.
            future.set_exception(OSError(failure.errno, failure.strerror or str(failure)))
