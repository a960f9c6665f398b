"""The embedded default: objects as files under a root directory, keyed exactly as in the bucket.

Writes are atomic (a temporary file, then linked or renamed into place, so a reader never sees
half an object) and durable before ``put`` returns. Durability comes from *group commit*: rather
than each write fsyncing its own file and directory, concurrent writes wait for a shared sync of
the whole filesystem (``syncfs``) that began after they wrote. Each write passes two barriers, so
the order holds that crash safety needs:

1. the temporary file is written, then a barrier: its data is on disk before any name points at it
   (and so are the entries of any folder the write made: the temporary is opened beside the
   object first, and only when that open finds the folder missing are the folders made, deepest
   first, and the open tried again, so a write into an existing folder costs no ``stat``);
2. the name is linked (or renamed) into place, then a barrier: the directory entry is on disk
   before ``put`` returns, so a 200 means stored.

Inside ``names_synced_at_end`` (one upload), the second barrier is left to the next write's first
barrier or to the block's end: a submission and its status cost 3 syncs, not 4.

Two ways to wait, the same order:

* ``put`` (threads: the CLI, the research tools) waits at ``SyncBarrier``, where the first waiter
  syncs for all who arrived before it started;
* ``put_async`` (the upload path, on the event loop) makes the file operations on the loop itself
  (a few KB into the page cache, a link or a rename: nothing that blocks) and awaits the store's
  ``Committer``: one thread, started at the first wait and stopped by ``close``, that takes every
  waiter handed over since its last sync, syncs once, and wakes them all with one call into the
  loop. No thread hop per upload, no GIL traded per system call. A failed sync fails every write
  of its batch (``StorageError``); none is told it is durable.

Create-if-absent is ``link()``, atomic by itself; compare-and-swap and overwrites hold an
exclusive ``flock`` on the object's directory, so several collector processes sharing one folder
stay exactly-once, like writers sharing one bucket. On the event loop the lock is tried without
blocking and retried after short sleeps (another process may hold it for a read and a rename);
past ``_LOCK_PATIENCE_SECONDS`` the write fails as transient, storing nothing.

The store refuses writes (``LowOnSpace``) when the filesystem has less than ``min_free_bytes``
or ``min_free_inodes`` left, so a full disk answers "retry later" instead of half-writing; a
failed write removes its temporary file, and temporaries left by a crash are swept at start.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from .base import (
    AlreadyExists,
    LowOnSpace,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StorageError,
    StoredObject,
    TransientStorageError,
    content_etag,
)
from .committer import Committer

logger = logging.getLogger(__name__)

_TEMP_MARK = ".tmp-"
# Temporaries older than this at start belong to a write that died (a crash, a kill): no live
# write takes minutes to write a few KB.
STALE_TEMPORARY_SECONDS = 300.0
# statvfs is cheap but not free; a second's staleness cannot matter against a threshold.
_SPACE_CHECK_SECONDS = 1.0
# How long an async compare-and-swap tries for a folder's lock that another writer holds; held
# for a read and a rename, it is free within microseconds unless that writer is stuck.
_LOCK_PATIENCE_SECONDS = 2.0


class LocalStore(ObjectStore):
    def __init__(
        self,
        root: Path,
        *,
        min_free_bytes: int = 0,
        min_free_inodes: int = 0,
        sweep_temporaries_older_than: float | None = STALE_TEMPORARY_SECONDS,
        sync: Callable[[], None] | None = None,
    ) -> None:
        """``sync``: what makes everything written so far durable; ``syncfs`` of the root unless a
        test passes a stand-in."""
        self.root = Path(root).absolute()
        # Paths on the write path are plain strings: a Path per key, its parent and its temporary
        # cost more CPU than the system calls they name (issue 18).
        self._prefix = str(self.root).rstrip("/") + "/"
        self.min_free_bytes = min_free_bytes
        self.min_free_inodes = min_free_inodes
        self._barrier = SyncBarrier(self.root, sync)  # put() from threads
        self._committer = Committer(sync or partial(_syncfs, self.root))  # put_async() on the loop
        self._space_checked_at = -_SPACE_CHECK_SECONDS
        self._space_problem: str | None = None
        if sweep_temporaries_older_than is not None and self.root.is_dir():
            removed = self.remove_stale_temporaries(sweep_temporaries_older_than)
            if removed:
                logger.warning("⚠️ Removed %d temporary files left by interrupted writes", removed)

    def _path(self, key: str) -> str:
        # Keys come from KeyLayout, but the store defends its own root regardless: no empty part
        # (a leading, trailing or doubled "/"), and no part starting with "." (".", "..", and the
        # names of temporaries). The same test as splitting on "/", without the list.
        if not key or key[0] in "./" or key[-1] == "/" or "//" in key or "/." in key:
            raise StorageError(f"key not allowed in a local store: {key!r}")
        return self._prefix + key

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        directory, path, temp = self._prepare(key)
        try:
            try:
                _write_making_dirs(temp, directory, body)
                self._barrier.wait()  # the data is on disk before a name points at it
                if if_absent:
                    # link() is atomic create-if-absent on its own, across processes: no lock.
                    # (A compare-and-swap holding the lock replaces atomically, so the name never
                    # looks absent while it exists.)
                    self._replace(temp, path, if_absent=True, if_match=None)
                else:
                    with _locked(directory):
                        self._replace(temp, path, if_absent=False, if_match=if_match)
            finally:
                # Inside the try: a write that fails half-way (no space) leaves nothing behind.
                _unlink_quietly(temp)
            if not self._defer_name_sync():
                self._barrier.wait()  # the name (and any new directory) is on disk before we answer
        except OSError as exc:
            raise self._write_failed(key, exc) from exc
        return content_etag(body)

    async def put_async(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        """``put`` on the event loop: the same steps and barriers, with the syncs in the committer.

        The file operations run here, on the loop (a few KB into the page cache, a link, a rename:
        microseconds); only the two syncs leave it, as awaits on the committer thread.
        """
        directory, path, temp = self._prepare(key)
        try:
            try:
                _write_making_dirs(temp, directory, body)
                await self._commit()  # the data is on disk before a name points at it
                if if_absent:
                    self._replace(temp, path, if_absent=True, if_match=None)
                else:
                    async with _locked_async(directory):
                        self._replace(temp, path, if_absent=False, if_match=if_match)
            finally:
                _unlink_quietly(temp)
            if not self._defer_name_sync():
                await self._commit()  # the name is on disk before we answer
        except OSError as exc:
            raise self._write_failed(key, exc) from exc
        return content_etag(body)

    def _prepare(self, key: str) -> tuple[str, str, str]:
        """The object's folder, its path and a fresh temporary beside it; ``LowOnSpace`` when
        space is short."""
        path = self._path(key)
        self._refuse_when_low_on_space()
        directory, _, name = path.rpartition("/")
        return directory, path, f"{directory}/.{name}{_TEMP_MARK}{_temp_suffix()}"

    def _write_failed(self, key: str, exc: OSError) -> StorageError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self._space_checked_at = -_SPACE_CHECK_SECONDS  # look again on the next write
            return LowOnSpace("storage is low on space")
        return StorageError(f"local store cannot write {key}: {exc.strerror or exc}")

    async def _commit(self) -> None:
        """Wait for the committer's next sync (``OSError`` if it failed)."""
        await self._committer.wait()

    # --- one upload's writes share their last sync -------------------------------------------------

    def _open_block(self) -> _NamesBlock | None:
        block = _names_block.get()
        return block if block is not None and block.active and block.store is self else None

    def _defer_name_sync(self) -> bool:
        """Inside a names-synced block: leave the name's sync to the next barrier or the block's end."""
        block = self._open_block()
        if block is None:
            return False
        block.pending = True
        return True

    @contextmanager
    def names_synced_at_end(self) -> Iterator[None]:
        """One upload's writes share barriers: ``put`` skips its second barrier.

        A submission and its status then cost three barriers, not four: the status's first
        barrier (its data) also puts the submission's name on disk, and one barrier at the end
        puts the last name there before the block exits (before any 200). Each name still
        points only at data already on disk. If the block fails, nothing is promised, as
        after a crash; names already linked become durable at any later barrier.

        The block belongs to the context it was opened in (a thread, or an asyncio task and the
        worker threads it hands calls to), not to the store: concurrent uploads each have their own.
        """
        with self._names_block() as block:
            yield
        if block is not None and block.pending:
            try:
                self._barrier.wait()
            except OSError as exc:
                raise self._sync_failed(exc) from exc

    @asynccontextmanager
    async def names_synced_at_end_async(self) -> AsyncIterator[None]:
        """``names_synced_at_end`` for a task: the last name's sync is one await on the committer."""
        with self._names_block() as block:
            yield
        if block is not None and block.pending:
            try:
                await self._commit()
            except OSError as exc:
                raise self._sync_failed(exc) from exc

    @contextmanager
    def _names_block(self) -> Iterator[_NamesBlock | None]:
        """Open this context's names-synced block; None inside one already open (the outer one syncs)."""
        if self._open_block() is not None:
            yield None
            return
        block = _NamesBlock(self)
        token = _names_block.set(block)
        try:
            yield block
        finally:
            block.active = False
            _names_block.reset(token)

    def _sync_failed(self, exc: OSError) -> StorageError:
        return StorageError(f"local store cannot sync {self.root}: {exc.strerror or exc}")

    @staticmethod
    def _replace(temp: str, path: str, *, if_absent: bool, if_match: str | None) -> None:
        if if_absent:
            try:
                os.link(temp, path)  # atomic create-if-absent, full content or nothing
            except FileExistsError:
                raise AlreadyExists(path) from None
            return
        if if_match is not None:
            try:
                current = content_etag(_read(path))
            except FileNotFoundError:
                raise PreconditionFailed(path) from None
            if current != if_match:
                raise PreconditionFailed(path)
        os.replace(temp, path)

    def get(self, key: str) -> StoredObject:
        path = self._path(key)
        try:
            body = _read(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"local store cannot read {key}: {exc.strerror or exc}") from exc
        return StoredObject(body, content_etag(body))

    async def get_async(self, key: str) -> StoredObject:
        return self.get(key)  # a few KB from the page cache: on the loop, no thread hop

    def delete(self, key: str) -> None:
        """Unlink the file, then wait at the sync barrier, so the removal survives a power cut.

        Empty directories are left in place: removing one could race a concurrent ``put`` that
        has just created it, and an empty directory is not an object (listing never shows it).
        """
        path = self._path(key)
        try:
            os.unlink(path)
            self._barrier.wait()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"local store cannot delete {key}: {exc.strerror or exc}") from exc

    async def delete_async(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
            await self._commit()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"local store cannot delete {key}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        self._committer.close()

    def prune_empty_folders(self, prefix: str) -> None:
        """Remove empty folders under ``prefix`` (a folder ending in ``/``), deepest first.

        Only after an erasure, when no upload may write there any more; a write that raced it
        anyway fails (503, retried) rather than storing anything in a removed folder.
        """
        top = self._path(prefix.rstrip("/"))
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            with suppress(OSError):  # not empty (or gone): it stays
                os.rmdir(directory)
        self._barrier.wait()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Start from the deepest directory the prefix names, so listing one participant is cheap.
        directory_part = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*directory_part.split("/")) if directory_part else self.root
        base = directory_part + "/" if directory_part else ""
        yield from self._walk(start, base, prefix)

    def _walk(self, directory: Path, base: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue  # temporaries and lock-free hidden files are not objects
            key = base + entry.name
            if entry.is_dir(follow_symlinks=False):
                if prefix.startswith(key + "/") or (key + "/").startswith(prefix):
                    yield from self._walk(Path(entry.path), key + "/", prefix)
            elif key.startswith(prefix):
                stat = entry.stat(follow_symlinks=False)
                yield ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))

    def check(self) -> None:
        try:
            _make_dirs(str(self.root))
        except OSError as exc:
            raise StorageError(f"local store root {self.root} unusable: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"local store root {self.root} is not writable")
        self._space_checked_at = -_SPACE_CHECK_SECONDS  # a health check always looks afresh
        self._refuse_when_low_on_space()

    # --- free space ------------------------------------------------------------------------------

    def _refuse_when_low_on_space(self) -> None:
        """Raise ``LowOnSpace`` when free bytes or inodes are under the thresholds (cached ~1 s)."""
        if not (self.min_free_bytes or self.min_free_inodes):
            return
        now = time.monotonic()
        if now - self._space_checked_at >= _SPACE_CHECK_SECONDS:
            self._space_problem = self._space_shortage()
            self._space_checked_at = now
        if self._space_problem is not None:
            raise LowOnSpace(self._space_problem)

    def _space_shortage(self) -> str | None:
        where = self.root
        while not where.exists() and where.parent != where:
            where = where.parent  # the root is made at the first write: ask its filesystem
        try:
            stats = os.statvfs(where)
        except OSError:
            return None  # an unusable root is check()'s and put()'s to report, with its own error
        # f_bavail/f_favail: what an unprivileged writer may still use.
        if stats.f_bavail * stats.f_frsize < self.min_free_bytes:
            return "storage is low on space"
        # A filesystem without inode accounting reports f_files == 0: nothing to compare.
        if stats.f_files and stats.f_favail < self.min_free_inodes:
            return "storage is low on space (free inodes)"
        return None

    # --- temporaries -----------------------------------------------------------------------------

    def temporaries(self) -> Iterator[ObjectInfo]:
        """Temporary files under the root (key-like path relative to the root, size, mtime)."""
        for directory, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and _TEMP_MARK in name:
                    path = os.path.join(directory, name)
                    try:
                        stat = os.stat(path, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # a live write finished meanwhile
                    relative = os.path.relpath(path, self.root).replace(os.sep, "/")
                    yield ObjectInfo(relative, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))

    def remove_stale_temporaries(self, older_than_seconds: float = STALE_TEMPORARY_SECONDS) -> int:
        """Remove temporaries older than ``older_than_seconds``; how many were removed."""
        cutoff = datetime.now(UTC).timestamp() - older_than_seconds
        removed = 0
        for info in list(self.temporaries()):
            if info.last_modified.timestamp() < cutoff:
                _unlink_quietly(self.root / info.key)
                removed += 1
        return removed


# --- group commit --------------------------------------------------------------------------------


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_SYNCFS = _find_syncfs()


def _syncfs(root: Path) -> None:
    """Everything written to the filesystem holding ``root`` is on disk (``sync()`` off Linux)."""
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


@dataclass
class _NamesBlock:
    """An open ``names_synced_at_end`` block: whose, and whether a name awaits its sync."""

    store: LocalStore
    active: bool = True
    pending: bool = False


_names_block: ContextVar[_NamesBlock | None] = ContextVar("local_store_names_block", default=None)


class SyncBarrier:
    """Group commit: ``wait()`` returns once everything this process wrote before the call is on disk.

    The first waiter becomes the leader and syncs the filesystem (``syncfs``: data, inodes and
    directory entries, one journal commit) for every waiter that arrived before it started; those
    arriving during that sync share the next one, led by the first of them. Under load, one sync
    serves a whole batch of writes; alone, a write pays one sync, like an fsync. (ctypes releases
    the GIL during the call.) Without ``syncfs`` (not Linux) it falls back to ``sync()``, which is
    slower but just as safe.

    Each waiter sleeps on its own lock, which the leader releases once a sync covers it (or to
    make it the next leader): a woken thread returns at once, where a ``Condition.notify_all``
    would wake the whole batch to fight over one lock (a thundering herd of thread switches, a
    large share of an upload's CPU when the event loop wants the GIL too).
    """

    def __init__(self, root: Path, sync: Callable[[], None] | None = None) -> None:
        self.root = root
        self._sync = sync or partial(_syncfs, root)
        self._lock = threading.Lock()
        self._arrived = 0  # tickets handed out
        self._covered = 0  # every ticket up to this one is durable
        self._syncing = False  # a leader is syncing (or has been handed the lead)
        self._waiting: list[tuple[int, threading.Lock]] = []  # (ticket, held gate), by ticket
        self.syncs = 0  # barriers run (for benchmarks: writes per sync)

    def wait(self) -> None:
        with self._lock:
            self._arrived += 1
            ticket = self._arrived
            lead = not self._syncing
            if lead:
                self._syncing = True
            else:
                gate = threading.Lock()
                gate.acquire()
                self._waiting.append((ticket, gate))
        if not lead:
            gate.acquire()  # released once a sync covers this ticket, or to hand over the lead
            # _covered only grows, and was set before the gate was released.
            if self._covered >= ticket:
                return
        # The leader (possibly handed the lead after a failed sync): sync for all who are here.
        with self._lock:
            covers = self._arrived  # everyone here now wrote before this sync starts
        synced = False
        try:
            self._sync()
            synced = True
        finally:
            # On failure the leader raises; the next waiter is handed the lead and tries again.
            self._finish(covers if synced else None)

    def _finish(self, covered: int | None) -> None:
        """After a sync: wake the waiters it covered, and hand the lead to the next one, if any."""
        with self._lock:
            if covered is not None:
                self._covered = max(self._covered, covered)
                self.syncs += 1
            done = [gate for ticket, gate in self._waiting if ticket <= self._covered]
            self._waiting = [(ticket, gate) for ticket, gate in self._waiting if ticket > self._covered]
            successor = self._waiting.pop(0)[1] if self._waiting else None
            self._syncing = successor is not None
        for gate in done:
            gate.release()
        if successor is not None:
            successor.release()


# --- files ---------------------------------------------------------------------------------------


def _write_making_dirs(temp: str, directory: str, body: bytes) -> None:
    """Write ``temp`` in ``directory``, making the folders only when the open finds one missing.

    Optimistic: most writes go to a folder that exists, and checking first would cost a ``stat``
    per level for nothing. Made between a failed open and the retry (by another writer), or
    removed again (by an erasure's prune), a folder makes the retry succeed or fail as any write.
    """
    try:
        _write(temp, body)
    except FileNotFoundError:
        _make_dirs(directory)
        _write(temp, body)


def _make_dirs(directory: str) -> None:
    """Create ``directory`` and its missing parents, deepest first: one ``mkdir`` when only the
    last level is missing. Their entries become durable at the write's next barrier."""
    try:
        os.mkdir(directory)
    except FileExistsError:
        return  # made meanwhile; if it is no folder, the write into it says so
    except FileNotFoundError:
        parent = directory.rpartition("/")[0] or "/"  # absolute: "/" ends the climb
        if parent == directory:
            raise
        _make_dirs(parent)
        with suppress(FileExistsError):
            os.mkdir(directory)


def _write(path: str, body: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        written = os.write(fd, body)  # a regular file takes it whole, short of a full disk
        if written < len(body):
            view = memoryview(body)[written:]
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    """The whole file, in one ``read`` of its size (objects are never changed in place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        body = os.read(fd, size + 1)  # asking one byte more sees the end in the same call
        if len(body) == size:
            return body
        chunks = [body]  # a short read, or the file grew: read on to its end
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# Unique per process (pid) and per write (counter); the random start keeps a restarted process
# that reuses a pid clear of its predecessor's leftovers. No syscall per write, unlike a token.
_temp_counter = itertools.count(secrets.randbits(32))


def _temp_suffix() -> str:
    return f"{os.getpid():x}-{next(_temp_counter):x}"


def _unlink_quietly(path: str | Path) -> None:
    try:  # noqa: SIM105 - on every write: suppress() would add a context manager's calls
        os.unlink(path)
    except FileNotFoundError:
        pass  # renamed into place, or never made


@asynccontextmanager
async def _locked_async(directory: str) -> AsyncIterator[None]:
    """``_locked`` on the event loop: tries without blocking, and sleeps between tries.

    Inside one process the lock is never awaited while held (the compare-and-swap under it has
    no await), so only another process, or a thread's ``put``, makes this wait: for the
    microseconds a read and a rename take, unless that writer stalls. Past
    ``_LOCK_PATIENCE_SECONDS`` the write fails as transient (nothing stored; a retry may pass).
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        delay, give_up = 0.0002, time.monotonic() + _LOCK_PATIENCE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= give_up:
                    raise TransientStorageError(f"{directory} stayed locked by another writer") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.01)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def _locked(directory: str | Path) -> Iterator[None]:
    """Exclusive lock on a directory, shared by every process writing into it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
