"""Streams a zip archive as it is written, so a download never holds the whole archive in memory.

A worker thread writes the archive into a bounded queue (``zipfile`` writes to an unseekable
stream with data descriptors); the response reads chunks from the queue. If the client goes
away, the writer is told to stop at its next write.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import zipfile
from collections.abc import AsyncIterator, Callable
from typing import Any

from anyio import to_thread

logger = logging.getLogger(__name__)

CHUNK = 256 * 1024
_DONE = object()


class _Cancelled(Exception):
    pass


class _QueueWriter(io.RawIOBase):
    """A write-only, unseekable file whose bytes go into a queue in chunks."""

    def __init__(self, chunks: queue.Queue[Any], cancelled: threading.Event) -> None:
        self._chunks = chunks
        self._cancelled = cancelled
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self._send()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._send()

    def _send(self) -> None:
        chunk, self._buffer = bytes(self._buffer), bytearray()
        while True:  # bounded queue: a slow client slows the writer instead of filling memory
            if self._cancelled.is_set():
                raise _Cancelled
            try:
                self._chunks.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue


async def stream_zip(fill: Callable[[zipfile.ZipFile], None]) -> AsyncIterator[bytes]:
    """The bytes of a zip archive that ``fill`` writes (called in a worker thread)."""
    chunks: queue.Queue[Any] = queue.Queue(maxsize=8)
    cancelled = threading.Event()

    def produce() -> None:
        writer = _QueueWriter(chunks, cancelled)
        try:
            with zipfile.ZipFile(writer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
                fill(archive)
            writer.flush()
        except _Cancelled:
            logger.info("Zip download cancelled by the client")
        except Exception as exc:
            # The headers are already sent; a truncated archive is all we can signal.
            logger.exception("Zip download failed")
            chunks.put(exc)
            return
        chunks.put(_DONE)

    threading.Thread(target=produce, name="zip-stream", daemon=True).start()
    try:
        while True:
            item = await to_thread.run_sync(chunks.get)
            if item is _DONE or isinstance(item, Exception):
                return
            yield item
    finally:
        cancelled.set()
