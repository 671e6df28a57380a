"""The ablation's aggregation on hand-made per-seed results: mean, sample std, min and max per
arm; the average over tasks covers the same tasks for every run; cells say n/a and missing
where they should, never 0."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from mbpo_bench.ablation.aggregate import (
    AVERAGE,
    per_seed_frame,
    seed_rows,
    summarise,
    task_average,
)
from mbpo_bench.ablation.report import BASE, arm_table, fmt_spread
from mbpo_bench.evaluation.schema import (
    SCHEMA_VERSION,
    BootstrapSettings,
    GenerationSettings,
    Metric,
    ModelInfo,
    ProbeResult,
    Results,
    TaskResult,
)

COLOR, POPE = "mbpo_embedded_color", "mbpo_pope_random"


def rows(arm: str, seed: int, task: str, **values: float) -> list[dict[str, object]]:
    return [{"arm": arm, "seed": seed, "task": task, "metric": k, "value": v}
            for k, v in values.items()]  # fmt: skip


def test_mean_std_min_max_over_seeds() -> None:
    frame = per_seed_frame(
        rows("sft", 0, COLOR, accuracy=0.5) + rows("sft", 1, COLOR, accuracy=0.7)
        + rows("sft", 2, COLOR, accuracy=0.9) + rows("grpo", 0, COLOR, accuracy=0.4)
    )  # fmt: skip
    s = summarise(frame)
    sft = s.loc[(COLOR, "sft", "accuracy")]
    assert sft["mean"] == pytest.approx(0.7) and sft["std"] == pytest.approx(0.2)  # ddof 1
    assert (sft["min"], sft["max"], sft["n"]) == (0.5, 0.9, 3)
    grpo = s.loc[(COLOR, "grpo", "accuracy")]
    assert grpo["mean"] == 0.4 and math.isnan(grpo["std"]) and grpo["n"] == 1
    assert fmt_spread(sft.to_dict()) == "0.700 ± 0.200 [0.500, 0.900]"
    assert fmt_spread(grpo.to_dict()) == "0.400"
    assert fmt_spread(None) == "n/a"


def test_undefined_values_are_left_out_not_zero() -> None:
    frame = per_seed_frame(
        rows("sft", 0, POPE, accuracy=0.6, acc_counter_prior=math.nan)
        + rows("sft", 1, POPE, accuracy=0.8, acc_counter_prior=math.nan)
    )
    s = summarise(frame)
    assert (POPE, "sft", "acc_counter_prior") not in s.index
    assert s.loc[(POPE, "sft", "accuracy")]["mean"] == pytest.approx(0.7)


def test_average_over_tasks_is_per_seed_and_over_common_tasks_only() -> None:
    per_seed = per_seed_frame(
        rows("a", 0, COLOR, accuracy=0.2, acc_counter_prior=0.1)
        + rows("a", 0, POPE, accuracy=0.6, acc_counter_prior=math.nan)
        + rows("a", 1, COLOR, accuracy=0.4, acc_counter_prior=0.3)
        + rows("a", 1, POPE, accuracy=1.0, acc_counter_prior=math.nan)
        + rows("b", 0, COLOR, accuracy=0.5, acc_counter_prior=0.5)
        + rows("b", 0, POPE, accuracy=math.nan, acc_counter_prior=math.nan)
    )
    average, used = task_average(per_seed)
    # b has no POPE accuracy: nobody's accuracy average includes POPE
    assert used == {"accuracy": [COLOR], "acc_counter_prior": [COLOR]}
    got = {(r.arm, r.seed, r.metric): r.value for r in average.itertuples()}
    assert got[("a", 0, "accuracy")] == 0.2 and got[("a", 1, "accuracy")] == 0.4
    assert set(average["task"]) == {AVERAGE}
    full = per_seed_frame(
        rows("a", 0, COLOR, accuracy=0.2) + rows("a", 0, POPE, accuracy=0.6)
        + rows("a", 1, COLOR, accuracy=0.4) + rows("a", 1, POPE, accuracy=1.0)
    )  # fmt: skip
    average, used = task_average(full)
    assert used == {"accuracy": [COLOR, POPE]}
    s = summarise(pd.concat([full, average], ignore_index=True))
    mean = s.loc[(AVERAGE, "a", "accuracy")]
    # per-seed averages 0.4 and 0.7: the spread is over seeds of the average
    assert mean["mean"] == pytest.approx(0.55) and (mean["min"], mean["max"]) == (0.4, 0.7)


def _metric(value: float | None) -> Metric:
    return Metric(value, 10)


def _results(task_metrics: dict[str, dict[str, float | None]]) -> Results:
    tasks = {}
    for task, m in task_metrics.items():
        image = {k: _metric(v) for k, v in m.items() if not k.startswith("visual_reliance")}
        balance = {k: _metric(v) for k, v in m.items() if k.startswith("visual_reliance")}
        tasks[task] = TaskResult(
            task=task, version="1", prompt_template="{question}", verifier="yes_no",
            generation=GenerationSettings(max_new_tokens=4), n_items=10, items_skipped=[],
            probes={"image": ProbeResult("image", 10, image)}, balance=balance,
        )  # fmt: skip
    return Results(
        schema_version=SCHEMA_VERSION, model=ModelInfo(id="m"), probes=["image"],
        bootstrap=BootstrapSettings(10, 0.95, 0), tasks=tasks, packages={}, git_sha=None,
        python="3.11", device="cpu", wall_time_s=1.0, compute_time_s=1.0, samples_per_s=None,
        n_samples=10, items_skipped=0, config={},
    )  # fmt: skip


def test_seed_rows_read_the_image_probe_and_the_balance_metrics() -> None:
    results = _results({
        COLOR: {"accuracy": 0.8, "acc_counter_prior": 0.6, "acc_prior_consistent": 1.0,
                "visual_reliance_blind": 0.3, "visual_reliance_mismatched": None},
        POPE: {"accuracy": 0.7},
    })  # fmt: skip
    got = {(r["task"], r["metric"]): r["value"] for r in seed_rows(results, "sft", 2)}
    assert got[(COLOR, "accuracy")] == 0.8 and got[(COLOR, "acc_counter_prior")] == 0.6
    assert got[(COLOR, "acc_prior_consistent")] == 1.0
    assert got[(COLOR, "visual_reliance_blind")] == 0.3
    assert math.isnan(got[(COLOR, "visual_reliance_mismatched")])  # undefined -> NaN, not 0
    assert math.isnan(got[(POPE, "acc_counter_prior")])
    assert math.isnan(got[(COLOR, "pair_accuracy")])  # not in these results: NaN
    assert len(got) == 2 * 6


def test_arm_table_shows_base_first_missing_arms_and_seed_counts(tmp_path: Path) -> None:
    from mbpo_bench.ablation import AblationConfig, build_plan

    cfg = AblationConfig(model="m", seeds=[0, 1], arms=["sft", "mbpo-pgd-iig-offline"])
    plan = build_plan(cfg, tmp_path / "out")
    per_seed = per_seed_frame(
        rows(BASE, None, COLOR, accuracy=0.5)  # type: ignore[arg-type]
        + rows("sft", 0, COLOR, accuracy=0.6, acc_counter_prior=0.2)
        + rows("sft", 1, COLOR, accuracy=0.8, acc_counter_prior=0.4)
    )
    table = arm_table(plan, summarise(per_seed), COLOR, {BASE: 1, "sft": 2})
    assert list(table.index) == [BASE, "sft", "mbpo-pgd-iig-offline"]
    assert table.loc[BASE, "accuracy"] == "0.500" and table.loc[BASE, "seeds"] == "1/1"
    assert table.loc["sft", "accuracy"] == "0.700 ± 0.141 [0.600, 0.800]"
    assert table.loc["sft", "prior-consistent acc."] == "n/a"
    assert table.loc["mbpo-pgd-iig-offline", "accuracy"] == "missing"
    assert table.loc["mbpo-pgd-iig-offline", "seeds"] == "0/2"
    assert table.loc["mbpo-pgd-iig-offline", "negatives"] == "pgd"
    assert table.loc["mbpo-pgd-iig-offline", "online"] == "off"


def test_main_effects_average_each_level_over_the_other_factors() -> None:
    from mbpo_bench.ablation import ARMS
    from mbpo_bench.ablation.aggregate import main_effects

    shift = {"pgd": 0.3, "noise": 0.2, "blind": 0.1}
    data = []
    for seed in (0, 1):
        for arm in ARMS:
            if arm.method != "mbpo":
                continue
            value = 0.1 * seed + shift[arm.source] + 0.04 * arm.iig_filter + 0.02 * arm.online
            data += rows(arm.name, seed, COLOR, accuracy=value)
    data += rows("sft", 0, COLOR, accuracy=0.99)  # baselines do not enter
    effects = main_effects(per_seed_frame(data), COLOR, ARMS)
    pgd = effects.loc[("negatives", "pgd", "accuracy")]
    # level mean at seed 0: 0.3 + 0.02 + 0.01; at seed 1: +0.1
    assert pgd["mean"] == pytest.approx(0.38) and pgd["n"] == 2
    assert (pgd["min"], pgd["max"]) == (pytest.approx(0.33), pytest.approx(0.43))
    on = effects.loc[("IIG filter", "on", "accuracy")]["mean"]
    off = effects.loc[("IIG filter", "off", "accuracy")]["mean"]
    assert on - off == pytest.approx(0.04)
    online = effects.loc[("online", "on", "accuracy")]["mean"]
    assert online - effects.loc[("online", "off", "accuracy")]["mean"] == pytest.approx(0.02)
    # a seed missing one factorial arm is left out; with fewer than 12 arms there is no table
    partial = per_seed_frame(
        [r for r in data if not (r["seed"] == 1 and r["arm"] == "mbpo-pgd-iig-online")]
    )
    assert main_effects(partial, COLOR, ARMS).loc[("negatives", "pgd", "accuracy")]["n"] == 1
    assert main_effects(per_seed_frame(data), COLOR, ARMS[:5]).empty
