"""The live progress bar (rich): one line per cell, with its ok / shed / error counts as they come."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from .client import OK, SHED, Record


class LiveProgress:
    """Counts records into the bar of the cell that is running. Disabled, it does nothing."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ok {task.fields[ok]} shed {task.fields[shed]} err {task.fields[err]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            refresh_per_second=4,  # cheap: the generator shares the machine with the server under test
        )
        self._task: TaskID | None = None

    def __enter__(self) -> LiveProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    @contextmanager
    def cell(self, description: str, total: int | None) -> Iterator[None]:
        self._task = self._progress.add_task(description, total=total, ok=0, shed=0, err=0)
        try:
            yield
        finally:
            task = self._progress.tasks[-1]
            self._progress.update(self._task, total=task.completed)
            self._task = None

    def record(self, record: Record) -> None:
        if self._task is None:
            return
        fields = self._progress.tasks[-1].fields
        key = "ok" if record.outcome == OK else "shed" if record.outcome == SHED else "err"
        self._progress.update(self._task, advance=1, **{key: fields[key] + 1})
