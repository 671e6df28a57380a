"""The options every config-taking command shares, declared once so that they read and behave the
same on `eval`, `train`, `mine` and `quickstart`: defaults, then `--config FILE`, then the options
typed on the command line, then `key=value` overrides (positional or `--set`); `--quiet` skips
the printed config. `train` and `mine` also share their run-folder and data options.

Typer's `Annotated` form: a command declares `quiet: Quiet = False` and gets the same flag, help
text and type as every other command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="YAML file of config fields (a run's config.yaml works); options typed here win.",
    ),
]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="A key=value override, as a positional one (repeatable)."),
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(metavar="[KEY=VALUE]...", help="Config overrides: section.key=value ..."),
]
Quiet = Annotated[bool, typer.Option("--quiet", help="Do not print the resolved config.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder.")]
IncludePaths = Annotated[
    list[Path] | None,
    typer.Option("--include-path", help="Extra folder of task YAML (repeatable), as for eval."),
]
SkipBadItems = Annotated[
    bool,
    typer.Option("--skip-bad-items", help="Drop (and count) items whose image fails to decode."),
]
