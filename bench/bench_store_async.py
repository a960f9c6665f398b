"""The local folder's cost per upload: sync writes from worker threads vs async writes on the loop.

One upload here is what the collector stores for a submission: a create-if-absent of ~3 KB and an
unconditional status write, inside one names-synced block (3 barriers), into a real folder with
real ``syncfs``. Both ways run in this process, one after the other, ``--concurrency`` uploads at
a time on one event loop:

* ``threads``: the whole upload handed to a worker thread (``asyncio.to_thread``, a pool of
  ``--threads``), which waits at ``SyncBarrier`` like the upload path did;
* ``loop``: ``put_async`` on the event loop, the syncs awaited on the store's committer thread.

Printed for each: uploads/s, CPU µs per upload (user+system of the whole process), context
switches per upload (voluntary + involuntary, all threads: ``getrusage``), syncs per upload, and
the ratio ``loop`` / ``threads``; once with real ``syncfs`` and once with a 2 ms sleep in its
place (``--sync``): ``syncfs`` also writes out what other processes wrote to the filesystem, and
that system time lands on this process, so on a shared machine only the second row isolates the
write path's own CPU. With ``strace`` installed, each way runs again in a child
process under ``strace -f -c`` and the futex calls per upload are printed too (``--no-strace``
to skip).

    .venv/bin/python bench/bench_store_async.py [--uploads 3000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from collector.storage import LocalStore

SUBMISSION = b'{"trials": "' + b"x" * 3000 + b'"}'
STATUS = b'{"status": "complete", "lastUploadAt": "2026-12-02T10:00:00Z"}'


@dataclass
class Figures:
    uploads: int
    seconds: float
    cpu: float
    switches: int
    syncs: int

    def line(self, name: str) -> str:
        n = self.uploads
        return (
            f"  {name:<8}: {n / self.seconds:7.0f} uploads/s, CPU {1e6 * self.cpu / n:5.0f} us/upload, "
            f"{self.switches / n:5.1f} context switches/upload, {self.syncs / n:4.2f} syncs/upload"
        )


def upload_sync(store: LocalStore, n: int) -> None:
    with store.names_synced_at_end():
        store.put(f"p/{n:06d}/submission.json", SUBMISSION, if_absent=True)
        store.put(f"p/{n:06d}/status.json", STATUS)


async def upload_async(store: LocalStore, n: int) -> None:
    async with store.names_synced_at_end_async():
        await store.put_async(f"p/{n:06d}/submission.json", SUBMISSION, if_absent=True)
        await store.put_async(f"p/{n:06d}/status.json", STATUS)


def pretend_sync() -> None:
    """A sync that takes a disk's time but none of this machine's CPU (see ``--sync``)."""
    time.sleep(0.002)


def run(way: str, root: Path, uploads: int, concurrency: int, threads: int, sync: str = "real") -> Figures:
    store = LocalStore(root, sync=pretend_sync if sync == "pretend" else None)

    async def drive() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads))
        numbers = iter(range(uploads))

        async def client() -> None:
            for n in numbers:
                if way == "threads":
                    await asyncio.to_thread(upload_sync, store, n)
                else:
                    await upload_async(store, n)

        await asyncio.gather(*(client() for _ in range(concurrency)))

    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    asyncio.run(drive())
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    store.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    switches = (after.ru_nvcsw - before.ru_nvcsw) + (after.ru_nivcsw - before.ru_nivcsw)
    return Figures(uploads, seconds, cpu, switches, store._barrier.syncs + store._committer.syncs)


def futex_calls(way: str, uploads: int, concurrency: int, threads: int) -> int | None:
    """Futex calls of a child process doing ``uploads`` uploads the given way, under strace."""
    with tempfile.TemporaryDirectory() as scratch:
        summary = Path(scratch) / "strace.txt"
        command = [
            "strace", "-f", "-c", "-e", "trace=futex", "-o", str(summary),
            sys.executable, __file__, "--only", way, "--uploads", str(uploads),
            "--concurrency", str(concurrency), "--threads", str(threads), "--root", scratch,
        ]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        for line in summary.read_text().splitlines():
            fields = line.split()
            if fields and fields[-1] == "futex":
                return int(fields[3])  # % time, seconds, usecs/call, calls, [errors,] syscall
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--threads", type=int, default=64, help="worker threads for the threads way")
    parser.add_argument(
        "--sync",
        choices=["real", "pretend", "both"],
        default="both",
        help="real: syncfs, whose system time includes writing out what other processes wrote to the "
        "same filesystem; pretend: a 2 ms sleep instead, so the CPU printed is the write path's own",
    )
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--only", choices=["threads", "loop"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.only:  # a child under strace: one way, nothing printed
        run(args.only, Path(args.root) / "data", args.uploads, args.concurrency, args.threads)
        return

    print(
        f"Local folder, {args.uploads} uploads (3 KB submission + status, one block), "
        f"{args.concurrency} at a time, under {tempfile.gettempdir()}"
    )
    for sync in ("real", "pretend") if args.sync == "both" else (args.sync,):
        print("real syncfs:" if sync == "real" else "a 2 ms sleep for each sync (the write path's own CPU):")
        figures: dict[str, Figures] = {}
        for way in ("threads", "loop"):
            with tempfile.TemporaryDirectory() as scratch:
                run(way, Path(scratch) / "warm", 200, args.concurrency, args.threads, sync)
                figures[way] = run(
                    way, Path(scratch) / "data", args.uploads, args.concurrency, args.threads, sync
                )
            print(figures[way].line(way))
        threads, loop = figures["threads"], figures["loop"]
        print(
            f"  loop / threads: {threads.seconds / loop.seconds:.2f}x uploads/s, "
            f"{loop.cpu / threads.cpu:.2f}x CPU, "
            f"{loop.switches / max(threads.switches, 1):.2f}x context switches"
        )
    if args.no_strace or shutil.which("strace") is None:
        return
    count = min(args.uploads, 1000)
    futexes = {way: futex_calls(way, count, args.concurrency, args.threads) for way in ("threads", "loop")}
    print(
        f"  futex calls/upload under strace ({count} uploads, real syncfs): "
        f"threads {futexes['threads'] / count:.1f}, loop {futexes['loop'] / count:.1f}"
    )


if __name__ == "__main__":
    main()
