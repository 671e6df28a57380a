"""One exception type for mistakes a user can fix.

The CLI prints a `UserError` as one line (`error: <what> — <fix>`) and exits non-zero; every
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A bad input that names the thing that is wrong and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean: a, b?)' for the closest candidates, or '' if none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def check_choice(what: str, name: str, choices: Iterable[str]) -> str:
    """`name` if it is one of `choices`; else a one-line UserError naming them, with a guess."""
    options = list(choices)
    if name not in options:
        raise UserError(
            f"unknown {what} '{name}'{did_you_mean(name, options)} — "
            f"choose one of: {', '.join(options)}"
        )
    return name


def exception_line(exc: BaseException, limit: int = 160) -> str:
    """`Type: first line of the message` (cut at `limit` characters), for the parenthesis of a
    one-line `UserError` that wraps a library's exception: the cause, without its traceback."""
    first = (str(exc).strip().splitlines() or [""])[0][:limit]
    return f"{type(exc).__name__}: {first}"
