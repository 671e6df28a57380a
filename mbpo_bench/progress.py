"""Rich progress bars for long stages (training, mining, evaluation, reports): one look.

Every bar shows what runs, done/total, the rate in the stage's own unit and the time left, on
stderr so stdout stays clean for piping. A disabled bar is a no-op, so callers need no branch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def columns(unit: str) -> list[Any]:
    """Description, bar, M/N, rate in `unit`/s (s/`unit` when slower than 1/s), elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            if not speed:
                return Text(f"-- {unit}/s", style="cyan")
            text = f"{speed:.1f} {unit}/s" if speed >= 1 else f"{1 / speed:.2f} s/{unit}"
            return Text(text, style="cyan")

    return [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]


@contextmanager
def stage_bar(
    title: str, total: int, *, unit: str = "it", enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)` for a bar of `total` units titled `title` (a no-op when disabled)."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(*columns(unit), console=Console(stderr=True)) as bar:
        tid = bar.add_task(title, total=total)
        yield lambda n: bar.update(tid, advance=n)
