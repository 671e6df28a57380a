"""`mbpo-bench report` with several seeds of one arm (run folders made here, no model): runs
that share a --name and were trained at distinct recorded seeds are one arm; its differences
against the baseline are taken over seeds (t interval, Holm, per-item CI of the seed mean) in a
table, and the forest plot draws that arm as one column whose marks are that table's verdicts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support_figures import TASKS, write_embedded_run

from mbpo_bench.errors import UserError
from mbpo_bench.metrics import across_seeds, holm
from mbpo_bench.reporting import forest, render_report
from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.loading import load_run
from mbpo_bench.reporting.paired import compare, meta_is
from mbpo_bench.reporting.render import load_runs, seed_groups
from mbpo_bench.reporting.report_figures import forest_rows
from mbpo_bench.reporting.seed_differences import seed_rows
from mbpo_bench.reporting.seeds import training_seed

pytest.importorskip("matplotlib")

COLOR, COUNT = TASKS[:2]
# counter-prior items right with the image (of 20) per seed of the MBPO arm on the colour task
# (the other tasks: 14 at every seed); the base: 4
MBPO = {0: 14, 1: 13, 2: 15}


def _trained_eval(root: Path, name: str, seed: int | None, counter: int) -> Path:
    """An eval run folder whose results name a checkpoint under a training run of `seed`;
    `counter` counter-prior items right on the colour task, 14 on the others (4 for the base)."""
    other = 4 if seed is None else 14
    cells = {(t, "image", "counter"): counter if t == COLOR else other for t in TASKS}
    evaluated = write_embedded_run(root / f"eval_{name}", cells)
    if seed is not None:
        train = root / f"train_{name}"
        (train / "final" / "model").mkdir(parents=True)
        (train / "config.yaml").write_text(f"runtime:\n  seed: {seed}\n  device: cpu\n")
        results = json.loads((evaluated / "results.json").read_text())
        results["config"] = {"model": str(train / "final" / "model"), "adapter": None}
        (evaluated / "results.json").write_text(json.dumps(results))
    return evaluated


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    out = {"base": _trained_eval(tmp_path, "base", None, 4)}
    out |= {f"mbpo{s}": _trained_eval(tmp_path, f"mbpo{s}", s, k) for s, k in MBPO.items()}
    out["control"] = _trained_eval(tmp_path, "control", 0, 6)
    return out


def test_training_seed_is_read_from_the_training_run(folders: dict[str, Path]) -> None:
    assert training_seed(load_run(folders["mbpo2"]).results.config) == 2
    assert training_seed(load_run(folders["base"]).results.config) is None
    assert training_seed({"model": "/nonexistent/final/model"}) is None


def test_seeds_of_one_arm_become_one_forest_column_over_seeds(
    tmp_path: Path, folders: dict[str, Path]
) -> None:
    config = ReportConfig(n_resamples=200)
    names = ["base", "mbpo", "mbpo", "mbpo", "control"]
    runs, base = load_runs(list(folders.values()), folders["base"], names)
    assert base is not None
    assert [r.name for r in runs] == ["base", "mbpo (seed 0)", "mbpo (seed 1)", "mbpo (seed 2)",
                                      "control"]  # fmt: skip
    groups = {"mbpo": [r for r in runs if r.arm == "mbpo"]}
    rows = seed_rows(groups, base, config)
    counter = next(r for r in rows if r.task == COLOR and r.quantity == "acc image, prior=counter")
    per_seed = [(k - 4) / 20 for k in MBPO.values()]
    est = across_seeds(per_seed)
    assert counter.seeds == (0, 1, 2)
    assert counter.diff.per_seed == pytest.approx(tuple(per_seed))
    assert (counter.diff.mean, counter.diff.low, counter.diff.high) == pytest.approx(
        (est.mean, est.low, est.high)
    )
    assert counter.diff.item is not None and counter.diff.item[2] == 20  # counter-prior items
    # each per-seed value is that seed's paired difference (the per-run tables' number)
    one = compare(runs[2], base, COLOR, "image", subset=meta_is(prior="counter"), config=config)
    assert one[0] == pytest.approx(per_seed[1])

    forest_data = forest_rows(runs, base, [], config, rows)
    columns = list(dict.fromkeys(r.column for r in forest_data))
    assert columns == ["control vs base", "mbpo (3 seeds) vs base"]  # no column per seed
    fig = forest.forest_figure(forest_data, marks=("shown", "not shown"))
    found = fig.findobj(lambda a: (a.get_gid() or "").startswith(("point|", "seeds|")))
    art = {a.get_gid(): a for a in found}
    key = f"mbpo (3 seeds) vs base|{COLOR}|acc image, prior=counter"
    assert list(art[f"seeds|{key}"].get_xdata()) == pytest.approx([est.low, est.high])
    for r in (r for r in forest_data if r.column.startswith("mbpo")):
        mine = next(x for x in rows if (x.task, x.quantity) == (r.section, r.label))
        point = art[f"point|{r.column}|{r.section}|{r.label}"]
        assert (point.get_markerfacecolor() != "white") == mine.diff.shown
    # colour: +0.5 [+0.38, +0.62] over seeds, Holm-adjusted over every row that has a test;
    # count: +0.5 at every seed, no spread, so no test and never shown (the old rule gave it
    # p = 0 and "shown", which a shared base repeated over seeds would also have earned)
    tested = [r.diff.p for r in rows]
    assert counter.diff.p_holm == pytest.approx(holm(tested)[rows.index(counter)])
    assert counter.diff.low > 0 and counter.diff.shown
    steady = next(r for r in rows if r.task == COUNT and r.quantity == "acc image, prior=counter")
    assert steady.diff.low == steady.diff.high == pytest.approx(0.5) and steady.diff.p is None
    assert not steady.diff.shown
    assert steady.diff.verdict() == "not shown (identical at every seed: no spread to test)"

    out = tmp_path / "rep" / "r.md"
    render_report(list(folders.values()), baseline=folders["base"], out=out, names=names,
                  config=config)  # fmt: skip
    text = out.read_text()
    table = text.split("### mbpo over 3 seeds (0, 1, 2) vs base")[1].split("###")[0]
    line = next(
        ln for ln in table.splitlines() if ln.startswith(f"| {COLOR} | acc image, prior=counter |")
    )
    assert line.endswith(f"| {counter.diff.verdict()} |")
    assert "### mbpo (seed 1) vs base" in text  # the per-seed tables stay
    assert re.search(r"!\[[^\]]+\]\(r_forest\.png\)", text)


def test_runs_sharing_a_name_without_distinct_seeds_are_refused(folders: dict[str, Path]) -> None:
    with pytest.raises(UserError, match=r"two runs are named 'x'.*distinct runtime.seed"):
        load_runs(
            [folders["base"], folders["mbpo0"], folders["control"]], None, ["b", "x", "x"]
        )  # fmt: skip (both seed 0)
    runs = [load_run(folders["mbpo0"], "x"), load_run(folders["mbpo1"], "x")]
    assert list(seed_groups(runs)) == ["x"]
