"""The GPU study line in README.md ("The GPU study", issue 17) builds a valid plan in each of its
three `mbpo-bench ablate` phases.

Why: the line runs once, on scarce device time, as one shell line; its first GPU run lost the dev
phase and every control to a refusal that plan construction alone raises (`overrides for mbpo but
no selected arm trains with it`). So the test takes the line from README.md itself, expands its
shell variables and runs each phase with `--dry-run` (plan construction, nothing trained). Any
folder path works as the model: building a plan never loads it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from mbpo_bench.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
HEADING = "#### The GPU study"


def study_block(readme: str) -> str:
    """The first ```bash block after the GPU study's heading."""
    start = readme.index(HEADING)
    match = re.search(r"```bash\n(.*?)```", readme[start:], re.S)
    assert match, f"no bash block after {HEADING!r} in README.md"
    return match.group(1)


def variables(block: str) -> dict[str, str]:
    """The line's plain assignments (`X=value` / `X="value"`), expanded in order as bash would."""
    values: dict[str, str] = {}
    for line in block.splitlines():
        if not re.match(r"[A-Z]=", line):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";")
        lexer.whitespace_split = True
        for token in lexer:
            name, eq, value = token.partition("=")
            if eq and re.fullmatch(r"[A-Z]", name):
                values[name] = expand(value, values)
    return values


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], text)


def ablate_phases(block: str, values: dict[str, str]) -> list[list[str]]:
    """Each `$A --model $M ...` command of the line, as argv after `mbpo-bench ablate`, cut at
    the shell's `||`, `>`, `)` or `&`."""
    assert values["A"] == "mbpo-bench ablate"
    phases = []
    for match in re.finditer(r"\$A (--model \$M[^|>)&\n]*)", block):
        phases.append(shlex.split(expand(match.group(1), values)))
    return phases


def test_the_readme_study_line_builds_all_three_ablation_plans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    block = study_block((ROOT / "README.md").read_text())
    values = variables(block)
    values["M"] = str(tmp_path / "base")  # the quickstart's seed-0 base; never loaded here
    phases = ablate_phases(block, values)
    assert [p[p.index("--output") + 1] for p in phases] == ["dev", "test", "test"]
    monkeypatch.chdir(tmp_path)

    plans = []
    for i, argv in enumerate(phases):
        if "--lr-from" in argv:  # the dev phase's output, as a finished dev run leaves it
            controls = phases[0][phases[0].index("--arms") + 1].split(",")
            choice = {"lr": 1.5e-4, "scores": {"0.00015": 0.5}, "seeds": 1, "split": "dev",
                      "source": "dev"}  # fmt: skip
            (tmp_path / "dev").mkdir(exist_ok=True)
            (tmp_path / "dev" / "lr_choice.json").write_text(
                json.dumps(dict.fromkeys(controls, choice))
            )
        code = main(["ablate", *argv, "--dry-run", "--quiet"])
        out, err = capsys.readouterr()
        assert code == 0, f"phase {i + 1} of the study line: {err.strip()}"
        plans.append(out)

    dev, first, test = plans
    assert "(dev split)" in dev and "15 training runs" in dev  # 5 controls x 3 lrs, seed 0
    assert "(test split)" in first and "(test split)" in test
    assert "24 training runs" in test  # 8 arms x seeds 0-2
    # the final test phase resumes the MBPO runs of the first: same runs, same pairs
    runs = [line for line in first.splitlines()
            if line.startswith(("mbpo-", "    pairs:", "    overrides:"))]  # fmt: skip
    assert len(runs) == 18 and set(runs) <= set(test.splitlines())  # 2 arms x 3 seeds x 3 lines


def test_the_check_sees_the_refusal_the_gpu_run_hit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shape of the first GPU run's dev phase: mbpo overrides with only controls selected."""
    code = main(["ablate", "--model", str(tmp_path / "base"), "--output", str(tmp_path / "dev"),
                 "--arms", "sft-mined", "--dry-run", "--quiet",
                 "mbpo:hybrid.online_pool=mined"])  # fmt: skip
    assert code == 2
    assert "overrides for mbpo but no selected arm trains with it" in capsys.readouterr().err
