"""The arguments of the running `mbpo-bench` command, for messages that print a command back.

`main(argv)` records them here: under `python -m pytest` or any in-process caller `sys.argv` is
the host's, not the command's, and a fix printed from it would not work as printed.
"""

from __future__ import annotations

import sys

_ARGV: list[str] | None = None


def set_argv(argv: list[str] | None) -> None:
    global _ARGV
    _ARGV = None if argv is None else list(argv)


def current_argv() -> list[str]:
    """The command's arguments (after the program name)."""
    return list(_ARGV) if _ARGV is not None else list(sys.argv[1:])
