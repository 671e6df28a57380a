"""The ablation report's figures on fixed run folders (written here, no model): three arms
(continued SFT, MBPO and its matched control `sft-mined`) at two seeds, and the base once.

Checked from the figures' artists (bar heights, whiskers, points, lines) and the PNG header,
never pixels: balance bars are the mean over seeds with the t interval over seeds, forest rows
are the per-seed differences of the tables with the marks of the table's verdict column, the
curves are the step-by-step mean over seeds.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from support_figures import PER_PRIOR, TASKS, mbpo_metrics, write_embedded_run, write_training_run

from mbpo_bench.ablation import AblationConfig, build_plan
from mbpo_bench.ablation import figures as ablation_figures
from mbpo_bench.ablation.aggregate import AVERAGE, QUANTITIES, Measurements
from mbpo_bench.ablation.execute import collect, write_outputs
from mbpo_bench.metrics import across_seeds
from mbpo_bench.reporting import balance_figure as balance
from mbpo_bench.reporting import forest
from mbpo_bench.reporting.figures import pixel_size, png_bytes
from mbpo_bench.reporting.plots import curves_figure, read_curves
from mbpo_bench.runs import RunDir

pytest.importorskip("matplotlib")

COLOR, COUNT, EXIST = TASKS
ARMS = ["sft", "mbpo-pgd-iig-online", "sft-mined"]
# counter-prior items right (of PER_PRIOR) with the image, per arm and seed; 10 elsewhere
COUNTER = {"base": 4, ("sft", 0): 3, ("sft", 1): 5, ("sft", 2): 4,
           ("mbpo-pgd-iig-online", 0): 14, ("mbpo-pgd-iig-online", 1): 14,
           ("mbpo-pgd-iig-online", 2): 15, ("sft-mined", 0): 6, ("sft-mined", 1): 7,
           ("sft-mined", 2): 6}  # fmt: skip
SEEDS = [0, 1, 2]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def by_gid(fig: Any, prefix: str) -> dict[str, Any]:
    found = fig.findobj(lambda a: (a.get_gid() or "").startswith(prefix + "|"))
    return {a.get_gid().split("|", 1)[1]: a for a in found}


def _cells(k: int) -> dict[tuple[str, str, str], int]:
    return {(task, "image", "counter"): k for task in TASKS}


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The run folders, written once for the module (rendering figures takes seconds)."""
    plan = build_plan(
        AblationConfig(model="m", seeds=SEEDS, arms=ARMS), tmp_path_factory.mktemp("x") / "abl"
    )
    base = write_embedded_run(
        Path(plan.base_eval.output), _cells(COUNTER["base"]), pairs={t: 1 for t in TASKS}
    )
    RunDir(base).finish()
    for run in plan.runs:
        key = (run.arm.name, run.seed)
        write_embedded_run(
            run.eval_dir, _cells(COUNTER[key]), pairs={t: 2 + run.seed for t in TASKS}
        )
        RunDir(run.eval_dir).finish()
        rows = mbpo_metrics(20)
        for r in rows:
            r["loss"] += run.seed  # seed k logs a loss k higher: the mean is + 1
        write_training_run(run.train_dir, rows)
    return plan


@pytest.fixture(scope="module")
def report(plan: Any) -> str:
    return write_outputs(plan, {}, ["mbpo-bench", "ablate", "--model", "m"]).report.read_text()


def test_ablation_report_carries_three_kinds_of_figure_beside_it(plan: Any, report: str) -> None:
    pngs = sorted(p.name for p in plan.output.glob("*.png"))
    assert pngs == ["report_balance_mbpo_embedded.png", "report_curves.png",
                    "report_findings.png", "report_forest.png"]  # fmt: skip
    text = report
    for name in pngs:
        assert re.search(rf"!\[[^\]]+\]\({name}\)", text), name
    alt = re.search(r"!\[([^\]]+)\]\(report_balance", text)
    assert alt is not None
    # main number: counter-prior image accuracy per arm, mean over seeds and the three tasks
    assert "counter-prior image accuracy base (start) 0.200, sft 0.200, " in alt.group(1)
    assert "mbpo-pgd-iig-online 0.717, sft-mined 0.317" in alt.group(1)
    sizes = {p.name: png_size(p.read_bytes()) for p in plan.output.glob("*.png")}
    assert sizes == {"report_balance_mbpo_embedded.png": (880, 1727),
                     "report_forest.png": (1638, 787), "report_curves.png": (1188, 605),
                     "report_findings.png": (981, 347)}  # fmt: skip


def test_balance_bars_are_the_mean_over_seeds_with_the_interval_over_seeds(plan: Any) -> None:
    base, arms = ablation_figures.evaluated(plan)
    assert base is not None and sorted(arms) == sorted(ARMS)
    seeds = {base.name: [base], **{a: list(runs.values()) for a, runs in arms.items()}}
    per_task = {t: balance.seed_mean_bars(seeds, t) for t in TASKS}
    panels = {t: balance.order_panels({b.panel for b in per_task[t]}) for t in TASKS}
    assert panels[COLOR] == [balance.ALL, "consistent", "counter", "pair_accuracy"]
    fig = balance.draw_balance(per_task, panels, list(seeds), base.name, "legend")
    bars, whiskers = by_gid(fig, "bar"), by_gid(fig, "ci")
    arm = "mbpo-pgd-iig-online"
    values = [COUNTER[(arm, s)] / PER_PRIOR for s in SEEDS]
    est = across_seeds(values)
    assert bars[f"{COUNT}|counter|{arm}|image"].get_height() == pytest.approx(43 / 60)
    (_, y0), (_, y1) = whiskers[f"{COUNT}|counter|{arm}|image"].get_segments()[0]
    assert (y0, y1) == pytest.approx((est.low, est.high))
    assert y1 - y0 > 0.1  # three seeds, a t quantile of 4.3: wide
    # the base, evaluated once: its own bootstrap CI (the fixture's value -+ 0.05)
    (_, b0), (_, b1) = whiskers[f"{COUNT}|counter|base (start)|image"].get_segments()[0]
    assert (b0, b1) == pytest.approx((0.15, 0.25))
    # twin pairs: the arms' (2, 3 and 4 of 20 at seeds 0-2), the base's (1)
    assert bars[f"{EXIST}|pair_accuracy|sft|image"].get_height() == pytest.approx(3 / 20)
    assert bars[f"{EXIST}|pair_accuracy|base (start)|image"].get_height() == pytest.approx(1 / 20)
    assert len(by_gid(fig, "baseline")) == 3 * 4  # the base shaded in every panel
    # two panels a row: prior-consistent and counter-prior side by side, twin pairs moved up
    spec = {k: bars[f"{COLOR}|{k}|sft|image"].axes.get_subplotspec() for k in
            ("all items", "pair_accuracy", "consistent", "counter")}  # fmt: skip
    assert [(v.rowspan.start, v.colspan.start) for v in spec.values()] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    ax = bars[f"{COLOR}|all items|sft|image"].axes
    assert ax.get_xticklabels()[0].get_text() == "base (start)\n(baseline)"
    assert pixel_size(fig) == (880, 1727)
    png_bytes(fig)


def test_forest_rows_are_the_tables_differences_with_the_verdicts(plan: Any, report: str) -> None:
    measured = Measurements.build(*collect(plan))
    assert measured.headline_task == AVERAGE
    base, arms = ablation_figures.evaluated(plan)
    found = ablation_figures.comparisons(plan, measured, base, arms, n_resamples=200)
    sections = {(c.arm, c.reference) for c in found}
    assert sections == {(a, "base (start)") for a in ARMS} | {("mbpo-pgd-iig-online", "sft-mined")}
    by_key = {(c.arm, c.reference, c.quantity): c for c in found}
    found_mbpo = by_key[("mbpo-pgd-iig-online", "sft-mined", "acc_counter_prior")]
    assert found_mbpo.seeds == (0, 1, 2)
    mbpo = found_mbpo.diff
    # per seed, mean over the three tasks: (14 - 6) / 20, (14 - 7) / 20, (15 - 6) / 20
    assert mbpo.per_seed == pytest.approx((0.4, 0.35, 0.45))
    assert mbpo.mean == pytest.approx(0.4)
    est = across_seeds([0.4, 0.35, 0.45])
    assert (mbpo.low, mbpo.high, mbpo.p) == pytest.approx((est.low, est.high, est.p_value))
    # twin pairs per item (both twins right): 60 pairs; here the samples' pairs are right where
    # both twins are (consistent: the first 10, counter: the first k), so mbpo - sft-mined is
    # (10 - 6) / 20, (10 - 7) / 20, (10 - 6) / 20 per pair on average
    pairs = by_key[("mbpo-pgd-iig-online", "sft-mined", "pair_accuracy")].diff.item
    assert pairs is not None and pairs[2] == 3 * PER_PRIOR and pairs[0] < 11 / 60 < pairs[1]
    # per-item paired CI of the seed-averaged items: 60 counter-prior items over three tasks
    assert mbpo.item is not None and mbpo.item[2] == 3 * PER_PRIOR
    assert mbpo.item[0] < 0.4 < mbpo.item[1]
    rows = ablation_figures.forest_rows(found)
    fig = forest.forest_figure(rows, title="t", xlabel="difference (arm - reference)")
    points, seeds = by_gid(fig, "point"), by_gid(fig, "seeds")
    for row, c in zip(rows, found, strict=True):
        key = f"{row.column}|{row.section}|{row.label}"
        (px,), _ = points[key].get_data()
        assert px == pytest.approx(c.diff.mean)
        assert (points[key].get_markerfacecolor() != "white") == c.shown
        if c.diff.low is not None and c.diff.low != c.diff.high:
            assert list(seeds[key].get_xdata()) == pytest.approx([c.diff.low, c.diff.high])
    panel_titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert panel_titles == [q.label for q in QUANTITIES]  # one panel per quantity of the tables
    png_bytes(fig)

    # the report's table states every row's verdict; the figure's marks are that column
    text = report
    table = [ln for ln in text.splitlines() if ln.startswith("| mbpo-pgd-iig-online - ")]
    assert len(table) == 2 * len(QUANTITIES)
    for c in found:
        line = next(
            ln for ln in text.splitlines()
            if ln.startswith(f"| {c.arm} - {c.reference} | {c.label} |")
        )  # fmt: skip
        assert line.endswith(f"| {c.diff.verdict()} |")
        assert ("**shown**" in line) == c.shown
    assert any(c.shown for c in found) and not all(c.shown for c in found)


def test_curves_are_the_mean_over_seeds_one_line_per_arm(plan: Any, report: str) -> None:
    from mbpo_bench.reporting.plots import mean_curves

    runs = [r for r in plan.runs if r.arm.name == "sft"]
    mean = mean_curves("sft", [read_curves(r.train_dir, "sft") for r in runs])
    rows = mbpo_metrics(20)
    assert mean.series["loss"][1] == pytest.approx([r["loss"] + 1 for r in rows])
    assert mean.series["kl"][1] == pytest.approx([r["kl"] for r in rows])
    fig = curves_figure([mean])
    assert fig is not None
    raw = by_gid(fig, "raw")
    assert list(raw["sft|loss"].get_ydata()) == pytest.approx([r["loss"] + 1 for r in rows])
    png_bytes(fig)


def test_many_arms_keep_the_curves_legend_inside_and_drop_the_bands(tmp_path: Path) -> None:
    from mbpo_bench.reporting.plots import MAX_BANDS, linestyle

    names = [f"mbpo-noise-noiig-offline-{i}" for i in range(MAX_BANDS + 2)]
    curves = [read_curves(write_training_run(tmp_path / n, mbpo_metrics(10)), n) for n in names]
    fig = curves_figure(curves)
    assert fig is not None
    assert not by_gid(fig, "band")  # overlapping spread bands would hide the lines
    # colours first, then dashes past the palette's eight, then dots
    assert [linestyle(i) for i in (0, 7, 8, 16)] == ["-", "-", "--", ":"]
    assert by_gid(fig, "smooth")[f"{names[0]}|loss"].get_linestyle() == "-"
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1
    png_bytes(fig)
    few = curves_figure(curves[:2])
    assert few is not None and by_gid(few, "band")
    png_bytes(few)


def test_forest_axis_stops_at_one_for_differences_of_proportions() -> None:
    wide = forest.ForestRow("s", "q", "c", 0.1, 0.05, 0.15, False, forest.SeedCI(-3.0, 3.2, 2))
    fig = forest.forest_figure([wide], limit=1.0)
    ax = by_gid(fig, "point")["c|s|q"].axes
    assert ax.get_xlim() == pytest.approx((-1.04, 1.04))
    text = by_gid(fig, "text")["c|s|q"].get_text()
    assert text == "+0.100, seeds [-3.000, +3.200]  NOT shown"  # the verdict's interval
    fig.canvas.draw()  # the margin is as wide as its longest text: nothing runs off the edge
    for artist in by_gid(fig, "text").values():
        assert artist.get_window_extent().x1 <= fig.bbox.x1
    png_bytes(fig)


def test_matched_controls_follow_the_arm_catalogue() -> None:
    from mbpo_bench.ablation import ARMS as CATALOGUE

    controls = ablation_figures.matched_controls(CATALOGUE)
    assert controls == {
        "mbpo-pgd-iig-online": ["sft-mined", "grpo-mined", "dpo-mined", "dpo-mdpo", "sft-balanced"],
        "mbpo-twins": ["sft-twins"],
    }
    grid = [dataclasses.replace(a, name=f"{a.name}@lr{lr:g}", lr=lr) for a in CATALOGUE
            for lr in (1e-5, 3e-5)]  # fmt: skip
    assert ablation_figures.matched_controls(grid)["mbpo-twins@lr3e-05"] == ["sft-twins@lr3e-05"]
    # lr_from: each control at the lr chosen on dev, MBPO at its own: still matched
    tuned = [dataclasses.replace(a, lr=1e-4) if a.control else a for a in CATALOGUE]
    assert ablation_figures.matched_controls(tuned) == controls
