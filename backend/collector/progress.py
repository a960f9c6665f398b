"""A progress bar for the command line's long walks over the bucket: rich on a terminal, silent otherwise."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RateColumn(TextColumn):
    """Objects per second, which is what tells a slow bucket from a slow export."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task) -> Text:  # type: ignore[no-untyped-def, override]
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} obj/s" if speed else "– obj/s", style="progress.data.speed")


class ObjectProgress:
    """Counts objects read, with rate and time left; does nothing when stderr is not a TTY."""

    def __init__(self, description: str) -> None:
        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            disable=not self._console.is_terminal,
            transient=False,
        )
        self._task = self._progress.add_task(description, total=None)

    def start(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def advance(self, count: int = 1) -> None:
        self._progress.advance(self._task, count)

    def __enter__(self) -> ObjectProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()
