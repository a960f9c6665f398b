"""The embedded default: objects as files under a root directory, keyed exactly as in the bucket.

Writes are atomic (a temporary file, fsync'd, then linked or renamed into place, so a reader
never sees half an object) and durable (the file and its directory are fsync'd before ``put``
returns). Conditional writes hold an exclusive ``flock`` on the object's directory, so several
collector processes sharing one folder stay exactly-once, like writers sharing one bucket.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from .base import (
    AlreadyExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StorageError,
    StoredObject,
    content_etag,
)

_TEMP_MARK = ".tmp-"


class LocalStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        # Keys come from KeyLayout, but the store defends its own root regardless.
        if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise StorageError(f"key not allowed in a local store: {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        path = self._path(key)
        try:
            self._make_dirs(path.parent)
            temp = path.with_name(f".{path.name}{_TEMP_MARK}{secrets.token_hex(6)}")
            _write_durably(temp, body)
            try:
                with _locked(path.parent):
                    self._replace(temp, path, if_absent=if_absent, if_match=if_match)
            finally:
                temp.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"local store cannot write {key}: {exc.strerror or exc}") from exc
        return content_etag(body)

    @staticmethod
    def _replace(temp: Path, path: Path, *, if_absent: bool, if_match: str | None) -> None:
        if if_absent:
            try:
                os.link(temp, path)  # atomic create-if-absent, full content or nothing
            except FileExistsError:
                raise AlreadyExists(str(path)) from None
            return
        if if_match is not None:
            try:
                current = content_etag(path.read_bytes())
            except FileNotFoundError:
                raise PreconditionFailed(str(path)) from None
            if current != if_match:
                raise PreconditionFailed(str(path))
        os.replace(temp, path)

    def get(self, key: str) -> StoredObject:
        path = self._path(key)
        try:
            body = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"local store cannot read {key}: {exc.strerror or exc}") from exc
        return StoredObject(body, content_etag(body))

    def delete(self, key: str) -> None:
        """Unlink the file and fsync its directory, so the removal survives a power cut.

        Empty directories are left in place: removing one could race a concurrent ``put`` that
        has just created it, and an empty directory is not an object (listing never shows it).
        """
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"local store cannot delete {key}: {exc.strerror or exc}") from exc
        try:
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"local store cannot delete {key}: {exc.strerror or exc}") from exc

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
            self._make_dirs(self.root)
        except OSError as exc:
            raise StorageError(f"local store root {self.root} unusable: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"local store root {self.root} is not writable")

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and its parents, fsyncing each parent so the new entry survives."""
        if directory.is_dir():
            return
        self._make_dirs(directory.parent)
        try:
            directory.mkdir()
        except FileExistsError:
            return
        _fsync_dir(directory.parent)


def _write_durably(path: Path, body: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(body)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive lock on a directory, shared by every process writing into it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
