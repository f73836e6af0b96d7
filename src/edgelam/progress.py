"""Progress bars for long-running loops (rich), silent when disabled or not on a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(
    description: str, total: int, *, completed: int = 0, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """A context manager yielding ``advance(n)``; draws a bar with rate and time left.

    >>> with progress_bar("demo", total=3, enabled=False) as advance:
    ...     for _ in range(3):
    ...         advance(1)
    """
    if not enabled:
        yield lambda n: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total, completed=completed, rate="")

        def advance(n: int) -> None:
            bar.advance(task, n)
            speed = bar.tasks[task].speed
            bar.update(task, rate=f"{speed:.0f}/s" if speed else "")

        yield advance
