"""The quickstart report's rules: pairs from sample rows, floors, and verdicts over seeds."""

from __future__ import annotations

from typing import Any

from mbpo_bench.quickstart_report import Finding, compute_findings, floors, pair_table

TASK = "mbpo_embedded_color"


class FakeRun:
    """What pair_table reads: rows per (task, probe), keyed by doc id."""

    def __init__(self, image: dict[str, dict[str, Any]], blind: dict[str, dict[str, Any]]):
        self._rows = {"image": image, "blind": blind}

    def rows(self, task: str, probe: str) -> dict[str, dict[str, Any]]:
        assert task == TASK
        return self._rows[probe]


def _row(pair: str, prior: str, correct: bool, parsed: str | None, cell: str = "color") -> dict:
    meta = {"pair_id": pair, "prior": prior, "pair_cell": cell}
    return {"correct": correct, "parsed": parsed, "meta": meta}


def test_pair_table_counts_both_twins_sensitivity_and_unparsed_apart() -> None:
    image = {
        "0": _row("p0", "consistent", True, "red"), "1": _row("p0", "counter", True, "blue"),
        "2": _row("p1", "consistent", True, "red"), "3": _row("p1", "counter", False, "red"),
        "4": _row("p2", "consistent", False, None), "5": _row("p2", "counter", False, "red"),
        "6": _row("p3", "consistent", True, "red"),  # half a pair (cut by --limit): left out
    }  # fmt: skip
    blind = {d: _row(r["meta"]["pair_id"], r["meta"]["prior"], r["meta"]["prior"] ==
                     "consistent", "red") for d, r in image.items()}  # fmt: skip
    table = pair_table(FakeRun(image, blind), TASK)  # type: ignore[arg-type]
    assert set(table) == {f"{TASK}/p0", f"{TASK}/p1", f"{TASK}/p2"}
    p0, p1, p2 = (table[f"{TASK}/p{i}"] for i in range(3))
    assert (p0["pair_accuracy"], p1["pair_accuracy"], p2["pair_accuracy"]) == (1.0, 0.0, 0.0)
    assert (p0["image_sensitivity"], p1["image_sensitivity"]) == (1.0, 0.0)
    assert p2["image_sensitivity"] == 0.0 and p2["unparsed_image"] == 0.5  # junk is not a change
    assert p0["prior_retention"] == 1.0 and p0["multimodal_gain"] == 0.5


def _table(counter: list[float], cells: list[str]) -> dict[str, dict[str, Any]]:
    return {
        f"t/p{i}": {"cell": c, "counter": k, "consistent": 1.0, "pair_accuracy": k}
        for i, (k, c) in enumerate(zip(counter, cells, strict=True))
    }


def test_a_cell_is_a_floor_only_when_every_checkpoint_scores_zero() -> None:
    cells = ["count:3", "count:3", "color", "color"]
    a, b = _table([0, 0, 0, 1], cells), _table([0, 0, 0, 0], cells)
    assert floors([a, b]) == ["count:3"]


def _seeds(deltas: list[float]) -> dict[int, dict[str, dict[str, dict[str, Any]]]]:
    """Per seed: base at counter 0 on 10 pairs, mbpo at `delta` more pairs right."""
    out = {}
    for seed, delta in enumerate(deltas):
        n_right = round(10 * delta)
        base = _table([0.0] * 10, ["color"] * 10)
        mbpo = _table([1.0] * n_right + [0.0] * (10 - n_right), ["color"] * 10)
        out[seed] = {"base": base, "mbpo": mbpo}
    return out


def test_shown_needs_the_interval_over_seeds() -> None:
    keep = {f"t/p{i}" for i in range(10)}
    steady = compute_findings(_seeds([0.3, 0.4, 0.3, 0.4]), keep, ["base", "mbpo"])
    gain = next(f for f in steady if f.metric == "pair_accuracy")
    assert gain.low > 0 and gain.shown()
    # the same mean, but one seed goes the other way: the per-item CI still excludes zero,
    # the interval over seeds does not
    noisy = compute_findings(_seeds([0.6, 0.6, -0.0, 0.2]), keep, ["base", "mbpo"])
    gain = next(f for f in noisy if f.metric == "pair_accuracy")
    assert gain.item[1] > 0 and not gain.shown()
    one = compute_findings(_seeds([0.5]), keep, ["base", "mbpo"])
    assert not any(f.shown() for f in one)


def test_a_loss_is_shown_only_below_zero() -> None:
    f = Finding("x", "a", "b", "consistent", "loss", [-0.1, -0.1], -0.1, -0.2, -0.05, 0.01, 0.02)
    assert f.shown()
    f.high = 0.01
    assert not f.shown()
