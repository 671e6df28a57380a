"""Start-up time of `mbpo-bench --help`, side by side with bare Python and with `import torch`.

Why: the CLI imports no heavy library before a command needs it; this shows what that buys.
Usage: python benchmarks/bench_startup.py [--repeats 10] [--out reports/perf/startup.md]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "mbpo-bench --help": [sys.executable, "-m", "mbpo_bench", "--help"],
    "mbpo-bench tasks --help": [sys.executable, "-m", "mbpo_bench", "tasks", "--help"],
    "python -c 'import torch, transformers' (what a heavy CLI pays)": [
        sys.executable,
        "-c",
        "import torch, transformers",
    ],
}


def time_command(cmd: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for label, cmd in CASES.items():
        time_command(cmd, 1)  # warm the file cache
        times = time_command(cmd, args.repeats)
        rows.append((label, statistics.median(times), min(times)))
    help_median = rows[1][1]
    lines = [
        "# CLI start-up time",
        "",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "",
        f"Median and best of {args.repeats} runs, wall seconds, on this machine.",
        "",
        "| command | median s | best s | ratio to `mbpo-bench --help` |",
        "|---|---|---|---|",
        *(
            f"| {label} | {med:.3f} | {best:.3f} | {med / help_median:.2f} |"
            for label, med, best in rows
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
