"""The report's figures on fixed results: image size and the plotted data, read from the
figures' artists (bar heights, whisker ends, points, lines), never from pixels.

Each figure is checked against the numbers it must show: the modality-balance bars against the
results' metrics, the forest plot's marks against the difference tables' `*` and the quickstart
findings' "shown" (one decision, two views), the curves grid against `metrics.jsonl`.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support_figures import (
    PER_PRIOR,
    TASKS,
    mbpo_metrics,
    sft_metrics,
    write_embedded_run,
    write_training_run,
)

from mbpo_bench.reporting import balance_figure as balance
from mbpo_bench.reporting import forest, render_report
from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.differences import difference_table
from mbpo_bench.reporting.figures import pixel_size, png_bytes
from mbpo_bench.reporting.loading import RunData, load_run
from mbpo_bench.reporting.plots import curves_figure, read_curves, smooth
from mbpo_bench.reporting.report_figures import forest_rows

pytest.importorskip("matplotlib")

COLOR, COUNT, EXIST = TASKS
# (task, probe, prior) -> items right of PER_PRIOR = 20; the rest of the cells get 10
BASE = {(COLOR, "image", "consistent"): 20, (COLOR, "image", "counter"): 4,
        (COLOR, "blind", "counter"): 0, (EXIST, "noise", "consistent"): 13}  # fmt: skip
MBPO = {(COLOR, "image", "consistent"): 19, (COLOR, "image", "counter"): 14,
        (COLOR, "blind", "counter"): 2, (EXIST, "noise", "consistent"): 7}  # fmt: skip


def by_gid(fig: Any, prefix: str) -> dict[str, Any]:
    """gid -> artist for every artist of `fig` whose gid starts with `prefix|`."""
    found = fig.findobj(lambda a: (a.get_gid() or "").startswith(prefix + "|"))
    return {a.get_gid().split("|", 1)[1]: a for a in found}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def runs(tmp_path: Path) -> list[RunData]:
    base = write_embedded_run(tmp_path / "base", BASE, pairs={t: 3 for t in TASKS})
    control = write_embedded_run(tmp_path / "control", {}, pairs={t: 5 for t in TASKS})
    mbpo = write_embedded_run(tmp_path / "mbpo", MBPO, pairs={t: 9 for t in TASKS})
    return [load_run(p) for p in (base, control, mbpo)]


def test_balance_figure_draws_every_metric_with_its_ci(runs: list[RunData]) -> None:
    fig = balance.balance_figure(runs, list(TASKS), "base")
    bars, whiskers = by_gid(fig, "bar"), by_gid(fig, "ci")
    # 3 tasks x 3 runs x (4 probes in "all items" and in 2 prior panels + 2 in the pair panel)
    assert len(bars) == len(whiskers) == 3 * 3 * (4 + 4 + 4 + 2)
    for run, spec in (("base", BASE), ("control", {}), ("mbpo", MBPO)):
        for (task, probe, prior), k in spec.items():
            bar = bars[f"{task}|{prior}|{run}|{probe}"]
            assert bar.get_height() == pytest.approx(k / PER_PRIOR)
            (x0, y0), (x1, y1) = whiskers[f"{task}|{prior}|{run}|{probe}"].get_segments()[0]
            assert x0 == x1 == pytest.approx(bar.get_x() + bar.get_width() / 2)
            assert (y0, y1) == pytest.approx((max(0, k / 20 - 0.05), min(1, k / 20 + 0.05)))
    assert bars[f"{COLOR}|all items|mbpo|image"].get_height() == pytest.approx((19 + 14) / 40)
    assert bars[f"{COUNT}|pair_accuracy|mbpo|image"].get_height() == pytest.approx(9 / 20)
    assert bars[f"{COUNT}|pair_accuracy|mbpo|blind"].get_height() == 0.0
    assert sorted(g for g in bars if "|pair_accuracy|" in g and g.startswith(COLOR)) == sorted(
        f"{COLOR}|pair_accuracy|{r}|{p}" for r in ("base", "control", "mbpo")
        for p in ("image", "blind")
    )  # fmt: skip
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_visible()]
    assert titles[:4] == [f"{COLOR}: all items", "prior-consistent items", "counter-prior items",
                          "twin pairs (both right)"]  # fmt: skip
    # bars grouped by run along x (base, control, mbpo), probes in their fixed order
    xs = [bars[f"{EXIST}|counter|{r}|{p}"].get_x() for r in ("base", "control", "mbpo")
          for p in ("image", "blind", "mismatched", "noise")]  # fmt: skip
    assert xs == sorted(xs)
    shades = by_gid(fig, "baseline")
    assert len(shades) == 3 * 4  # every panel shades the baseline's group, and only it
    ax = bars[f"{COLOR}|all items|base|image"].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base\n(baseline)", "control", "mbpo"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["image", "blind", "mismatched", "noise"]
    assert pixel_size(fig) == (1408, 902)
    assert png_size(png_bytes(fig)) == (1408, 902)


def test_balance_figure_without_priors_or_pairs_has_one_panel(tmp_path: Path) -> None:
    run = load_run(write_embedded_run(tmp_path / "a", {}))
    for probe in run.results.tasks[COLOR].probes.values():
        for name in [m for m in probe.metrics if m.startswith("accuracy[")]:
            del probe.metrics[name]
    assert balance.panels([run], COLOR) == [balance.ALL]
    fig = balance.balance_figure([run], [COLOR], None)
    assert sorted(by_gid(fig, "bar")) == [f"{COLOR}|all items|a|{p}" for p in
                                          ("blind", "image", "mismatched", "noise")]  # fmt: skip
    assert not by_gid(fig, "baseline")
    png_bytes(fig)  # closes it


def test_task_groups_follow_shared_name_prefixes() -> None:
    groups = balance.task_groups([*TASKS, "mbpo_pope_random", "mbpo_pope_popular", "mbpo_mme"])
    assert groups == {
        "mbpo_embedded": list(TASKS),
        "mbpo_pope": ["mbpo_pope_popular", "mbpo_pope_random"],
        balance.OTHER_GROUP: ["mbpo_mme"],
    }


ROWS = [
    forest.ForestRow("task a", "acc image", "mbpo vs base", 0.10, 0.04, 0.16, True),
    forest.ForestRow("task a", "acc blind", "mbpo vs base", -0.02, -0.07, 0.03, False),
    forest.ForestRow(
        "task b", "acc image", "mbpo vs base", 0.05, 0.01, 0.09, False, forest.SeedCI(-0.2, 0.3, 3)
    ),
    forest.ForestRow("task a", "acc image", "control vs base", 0.0, 0.0, 0.0, False),
]


def test_forest_plot_draws_points_cis_and_marks() -> None:
    fig = forest.forest_figure(ROWS)
    points, cis, seeds = by_gid(fig, "point"), by_gid(fig, "ci"), by_gid(fig, "seeds")
    texts = by_gid(fig, "text")
    assert sorted(points) == sorted(f"{r.column}|{r.section}|{r.label}" for r in ROWS)
    y = {}
    for row in ROWS:
        key = f"{row.column}|{row.section}|{row.label}"
        (px,), (py,) = points[key].get_data()
        assert px == pytest.approx(row.diff)
        y[(row.section, row.label)] = py
        assert list(cis[key].get_xdata()) == pytest.approx([row.low, row.high])
        filled = points[key].get_markerfacecolor() != "white"
        assert filled == row.shown
        verdict = "shown" if row.shown else "NOT shown"
        assert texts[key].get_text() == f"{row.text()}  {verdict}"
    assert list(seeds) == ["mbpo vs base|task b|acc image"]
    assert list(seeds["mbpo vs base|task b|acc image"].get_xdata()) == [-0.2, 0.3]
    # rows top to bottom under their section headers; the same row at the same y in each panel
    assert y[("task a", "acc image")] > y[("task a", "acc blind")] > y[("task b", "acc image")]
    zeros = by_gid(fig, "zero")
    assert sorted(zeros) == ["control vs base", "mbpo vs base"]
    assert all(list(z.get_xdata()) == [0, 0] for z in zeros.values())
    ax = points["mbpo vs base|task a|acc image"].axes
    low, high = ax.get_xlim()
    assert low == pytest.approx(-high) and high >= 0.3  # zero centred, every interval inside
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["task a", "acc image", "acc blind", "task b", "acc image"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "shown", "NOT shown", "across-seed 95% CI",
    ]  # fmt: skip
    assert pixel_size(fig) == (1473, 275)
    assert png_size(png_bytes(fig)) == (1473, 275)


def test_forest_rows_are_the_tables_rows_with_the_tables_marks(runs: list[RunData]) -> None:
    config = ReportConfig(n_resamples=200)
    base = runs[0]
    rows = forest_rows(runs, base, [], config)
    for run in runs[1:]:
        table, _ = difference_table(run, base, config)
        table = table[table["task"] != "average"]
        mine = [r for r in rows if r.column == f"{run.name} vs {base.name}"]
        assert [(r.section, r.label) for r in mine] == list(
            zip(table.task, table.quantity, strict=True)
        )
        assert [r.shown for r in mine] == [d.endswith("*") for d in table["diff"]]
        assert [f"{r.diff:+.3f}" for r in mine] == [d.rstrip("*") for d in table["diff"]]
    assert any(r.shown for r in rows) and not all(r.shown for r in rows)


def test_curves_grid_plots_raw_and_smoothed_series(tmp_path: Path) -> None:
    mbpo = read_curves(write_training_run(tmp_path / "mbpo", mbpo_metrics()), "mbpo")
    sft = read_curves(write_training_run(tmp_path / "sft", sft_metrics()), "sft")
    fig = curves_figure([mbpo, sft])
    assert fig is not None
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == [
        "loss", "reward (mean ± spread)", "KL to reference", "share of groups with signal",
        "accuracy (online rollouts)",
    ]  # fmt: skip
    raw, smoothed, bands = by_gid(fig, "raw"), by_gid(fig, "smooth"), by_gid(fig, "band")
    assert sorted(raw) == sorted(smoothed) == sorted(
        ["mbpo|loss", "mbpo|reward_mean", "mbpo|kl", "mbpo|zero_variance_frac", "mbpo|accuracy",
         "sft|loss"]
    )  # fmt: skip
    assert list(bands) == ["mbpo|reward_mean"]
    rows = mbpo_metrics()
    for key in ("loss", "reward_mean", "kl", "accuracy"):
        values = [r[key] for r in rows]
        assert list(raw[f"mbpo|{key}"].get_ydata()) == pytest.approx(values)
        assert list(smoothed[f"mbpo|{key}"].get_ydata()) == pytest.approx(smooth(values))
    signal = [1 - r["zero_variance_frac"] for r in rows]
    assert list(raw["mbpo|zero_variance_frac"].get_ydata()) == pytest.approx(signal)
    # every run on the same axes: the loss panel holds both runs, x = the logged steps
    assert raw["sft|loss"].axes is raw["mbpo|loss"].axes
    assert list(raw["sft|loss"].get_xdata()) == list(range(200))
    assert raw["mbpo|loss"].get_alpha() == 0.25 and smoothed["mbpo|loss"].get_alpha() is None
    band = bands["mbpo|reward_mean"].get_paths()[0].vertices
    mean = np.array(smooth([r["reward_mean"] for r in rows]))
    assert band[:, 1].max() == pytest.approx((mean + 0.2).max())
    assert pixel_size(fig) == (1188, 605)
    assert png_size(png_bytes(fig)) == (1188, 605)


def test_smoothing_keeps_constants_and_starts_at_the_first_value() -> None:
    assert smooth([2.0] * 30) == pytest.approx([2.0] * 30)
    values = [float(i % 2) for i in range(40)]
    out = smooth(values)
    assert out[0] == 0.0 and max(out[10:]) - min(out[10:]) < 0.5  # the wiggle is damped


def test_report_writes_its_figures_beside_it_and_links_them(
    tmp_path: Path, runs: list[RunData]
) -> None:
    train = write_training_run(tmp_path / "train", mbpo_metrics())
    out = tmp_path / "reports" / "qs.md"
    render_report([r.path for r in runs], baseline=runs[0].path, out=out, training_runs=[train])
    written = sorted(p.name for p in out.parent.iterdir())
    assert written == ["qs.md", "qs_balance_mbpo_embedded.png", "qs_curves.png", "qs_forest.png"]
    text = out.read_text()
    for name in written[1:]:
        assert re.search(rf"!\[[^\]]+\]\({name}\)", text), name
    balance_alt = re.search(r"!\[([^\]]+)\]\(qs_balance", text)
    assert balance_alt is not None
    # the main number: image accuracy per run, mean over the three tasks
    image = {"base": (24 + 20 + 20) / 120, "control": 0.5, "mbpo": (33 + 20 + 20) / 120}
    assert ", ".join(f"{k} {v:.3f}" for k, v in image.items()) in balance_alt.group(1)
    assert "last loss: train 0.2" in text


def test_no_curves_figure_without_a_metric_the_grid_draws(tmp_path: Path) -> None:
    only_lr = write_training_run(tmp_path / "t", [{"step": s, "lr": 1e-4} for s in range(5)])
    assert curves_figure([read_curves(only_lr, "t")]) is None


def test_balance_panels_wrap_evenly_when_many_runs_make_them_wide(runs: list[RunData]) -> None:
    width, ncols, cells = balance.grid(runs, list(TASKS), 4)
    assert (width, ncols) == (3.2, 4)  # 3 runs: a task's 4 panels in one row
    many = [dataclasses.replace(runs[i % 3], name=f"arm{i}") for i in range(5)]
    width, ncols, cells = balance.grid(many, list(TASKS), 4)
    assert ncols == 2  # 4 panels of 4.8 inches: two rows of two, not 3 + 1
    assert [(r, c) for t, _, r, c in cells if t == COUNT] == [(2, 0), (2, 1), (3, 0), (3, 1)]
