"""Rich progress for evaluation: one bar over all samples still to do, with samples/s.

Printed to stderr so stdout stays clean for piping; disabled (a no-op) with `enabled=False`
and in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Advance = Callable[[str, int], None]


@contextmanager
def eval_progress(total: int, *, enabled: bool = True) -> Iterator[Advance]:
    """Yield `advance(description, n)`; the bar shows done/total, samples/s and time left."""
    if not enabled or total == 0:
        yield lambda description, n: None
        return
    from rich.console import Console
    from rich.progress import Progress

    from mbpo_bench.progress import columns

    with Progress(*columns("samples"), console=Console(stderr=True)) as bar:
        tid = bar.add_task("eval", total=total)

        def advance(description: str, n: int) -> None:
            bar.update(tid, advance=n, description=description)

        yield advance
