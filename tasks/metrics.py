"""Task metrics from per-sample rows; standard library only, so lmms-eval YAML can reference them
(`aggregation: !function mbpo_bench.tasks.metrics.<fn>`) and our own evaluation calls the same code.

A row is what `mbpo_bench.tasks.common.score_row` returns: `correct` (bool), `parsed` (the
canonical answer or None), `target` (the canonical reference), `meta` (task labels such as
`prior`, `category`, `set_id`). Every function maps a list of rows to one float; empty inputs
give 0.0 (never a ZeroDivisionError inside lmms-eval's aggregation).

Fixes over lmms-eval's built-ins: `yes_ratio` counts PREDICTED yes (POPE's built-in counts the
ground truth, always ~0.5); an unparsed answer counts as "not yes", like a wrong answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

Row = dict[str, Any]

# MME's two halves (lmms-eval and the MME paper); scores are sum over categories of
# (acc + acc+) * 100, i.e. perception max 2000, cognition max 800.
MME_PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
    "artwork", "OCR",
)  # fmt: skip
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation",
                 "code_reasoning")  # fmt: skip


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0


def _meta(row: Row, key: str) -> Any:
    return (row.get("meta") or {}).get(key)


def accuracy(rows: Sequence[Row]) -> float:
    return _mean(1.0 if r["correct"] else 0.0 for r in rows)


# --- yes/no detection metrics (POPE, AMBER discriminative); positive class = "yes" -------------


def _confusion(rows: Sequence[Row]) -> tuple[int, int, int, int]:
    tp = fp = tn = fn = 0
    for r in rows:
        pred_yes, true_yes = r.get("parsed") == "yes", r.get("target") == "yes"
        tp += pred_yes and true_yes
        fp += pred_yes and not true_yes
        fn += (not pred_yes) and true_yes
        tn += (not pred_yes) and not true_yes
    return tp, fp, tn, fn


def precision(rows: Sequence[Row]) -> float:
    tp, fp, _, _ = _confusion(rows)
    return tp / (tp + fp) if tp + fp else 0.0


def recall(rows: Sequence[Row]) -> float:
    tp, _, _, fn = _confusion(rows)
    return tp / (tp + fn) if tp + fn else 0.0


def f1(rows: Sequence[Row]) -> float:
    p, r = precision(rows), recall(rows)
    return 2 * p * r / (p + r) if p + r else 0.0


def yes_ratio(rows: Sequence[Row]) -> float:
    """The fraction of PREDICTED yes (a model that always says yes scores 1.0)."""
    return _mean(1.0 if r.get("parsed") == "yes" else 0.0 for r in rows)


# --- embedded benchmark: the language-prior gap --------------------------------------------------


def acc_prior_consistent(rows: Sequence[Row]) -> float:
    return accuracy([r for r in rows if _meta(r, "prior") == "consistent"])


def acc_counter_prior(rows: Sequence[Row]) -> float:
    return accuracy([r for r in rows if _meta(r, "prior") == "counter"])


def counter_prior_gap(rows: Sequence[Row]) -> float:
    """Accuracy on prior-consistent minus counter-prior items: 0 = no reliance on the prior."""
    return acc_prior_consistent(rows) - acc_counter_prior(rows)


def complete_pairs(rows: Sequence[Row]) -> dict[Any, list[Row]]:
    """pair_id -> its rows, for pairs whose two twins are both present (a `--limit` or a skipped
    item can cut one off; a half pair says nothing about looking, so it is left out)."""
    groups = _groups([r for r in rows if _meta(r, "pair_id") is not None],
                     lambda r: _meta(r, "pair_id"))  # fmt: skip
    return {k: g for k, g in groups.items() if len(g) == 2}


def pair_accuracy(rows: Sequence[Row]) -> float:
    """Both twins of a pair right (embedded benchmark v3). The twins share question text and
    differ only in the asked attribute's pixels, so any answer that ignores the image gets at
    most one of them: 0 for every deterministic text-only policy."""
    return _mean(
        1.0 if all(r["correct"] for r in g) else 0.0 for g in complete_pairs(rows).values()
    )


def unparsed_rate(rows: Sequence[Row]) -> float:
    """Answers the verifier could not parse (counted apart from parsed wrong answers)."""
    return _mean(1.0 if r.get("parsed") is None else 0.0 for r in rows)


def _negatives(rows: Sequence[Row], split: str) -> float:
    return accuracy([r for r in rows if _meta(r, "negative_split") == split])


def acc_negatives_random(rows: Sequence[Row]) -> float:
    """Accuracy on "no" items whose absent object was drawn at random (1 - false-yes rate)."""
    return _negatives(rows, "random")


def acc_negatives_popular(rows: Sequence[Row]) -> float:
    """Accuracy on "no" items asking about the most frequent absent object."""
    return _negatives(rows, "popular")


def acc_negatives_adversarial(rows: Sequence[Row]) -> float:
    """Accuracy on "no" items asking about an absent object that co-occurs with a present one."""
    return _negatives(rows, "adversarial")


# --- grouped accuracy: all questions of a group right -------------------------------------------


def _groups(rows: Sequence[Row], key: Callable[[Row], Any]) -> dict[Any, list[Row]]:
    out: dict[Any, list[Row]] = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return out


def group_accuracy(rows: Sequence[Row], key: Callable[[Row], Any]) -> float:
    return _mean(1.0 if all(r["correct"] for r in g) else 0.0 for g in _groups(rows, key).values())


# --- MME ----------------------------------------------------------------------------------------


def mme_category_scores(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """Per category: acc (per question), acc_plus (both questions of an image right), score."""
    out = {}
    for category, group in _groups(rows, lambda r: _meta(r, "category")).items():
        acc = accuracy(group)
        acc_plus = group_accuracy(group, lambda r: _meta(r, "image_id"))
        out[str(category)] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * (acc + acc_plus)}
    return out


def _mme_half(rows: Sequence[Row], categories: tuple[str, ...]) -> float:
    scores = mme_category_scores([r for r in rows if _meta(r, "category") in categories])
    return sum(s["score"] for s in scores.values())


def mme_perception(rows: Sequence[Row]) -> float:
    return _mme_half(rows, MME_PERCEPTION)


def mme_cognition(rows: Sequence[Row]) -> float:
    return _mme_half(rows, MME_COGNITION)


def mme_acc_plus(rows: Sequence[Row]) -> float:
    """acc+ over all images (both questions of an image right)."""
    return group_accuracy(rows, lambda r: (_meta(r, "category"), _meta(r, "image_id")))


# --- MMStar -------------------------------------------------------------------------------------


def mmstar_average(rows: Sequence[Row]) -> float:
    """The mean over l2 categories of each category's accuracy (lmms-eval's `average` formula,
    with our verifier's verdicts), from the categories' real sizes in the rows."""
    groups = _groups(rows, lambda r: _meta(r, "l2_category"))
    return _mean(accuracy(g) for g in groups.values())


# --- HallusionBench (rule-based) ----------------------------------------------------------------


def hallusion_aacc(rows: Sequence[Row]) -> float:
    """Question-level accuracy over all questions."""
    return accuracy(rows)


def hallusion_facc(rows: Sequence[Row]) -> float:
    """Figure accuracy: every question about the same figure right."""
    keys = ("category", "subcategory", "set_id", "figure_id")
    return group_accuracy(rows, lambda r: tuple(_meta(r, k) for k in keys))


def hallusion_qacc(rows: Sequence[Row]) -> float:
    """Question accuracy: the same question right on every figure variant it is asked about."""
    keys = ("category", "subcategory", "set_id", "question_id")
    return group_accuracy(rows, lambda r: tuple(_meta(r, k) for k in keys))


# --- MMVP ---------------------------------------------------------------------------------------


def mmvp_pair_accuracy(rows: Sequence[Row]) -> float:
    """Both questions of an MMVP pair right (the benchmark's headline number)."""
    return group_accuracy(rows, lambda r: _meta(r, "pair_id"))


# --- CHAIR (captions; rows carry `mentioned` and `hallucinated` object lists) -------------------


def chair_s(rows: Sequence[Row]) -> float:
    """Fraction of captions with at least one hallucinated object (lower is better)."""
    return _mean(1.0 if r.get("hallucinated") else 0.0 for r in rows)


def chair_i(rows: Sequence[Row]) -> float:
    """Hallucinated object mentions / all object mentions (lower is better)."""
    mentioned = sum(len(r.get("mentioned") or ()) for r in rows)
    hallucinated = sum(len(r.get("hallucinated") or ()) for r in rows)
    return hallucinated / mentioned if mentioned else 0.0


def chair_recall(rows: Sequence[Row]) -> float:
    """Ground-truth objects mentioned / all ground-truth objects (coverage)."""
    truth = sum(len(r.get("truth") or ()) for r in rows)
    covered = sum(len(set(r.get("mentioned") or ()) & set(r.get("truth") or ())) for r in rows)
    return covered / truth if truth else 0.0


# --- MMBench CircularEval (rows are passes: meta question_index, shift, mmbench_category, ...) ---


def _question(r: Row) -> Any:
    return _meta(r, "question_index")


def mmbench_circular(rows: Sequence[Row]) -> float:
    """CircularEval: a question counts only if EVERY circular shift of its options is right."""
    return group_accuracy(rows, _question)


def mmbench_single(rows: Sequence[Row]) -> float:
    """Single-pass accuracy: the options in their published order only (shift 0)."""
    return accuracy([r for r in rows if _meta(r, "shift") == 0])


def _circular_by(rows: Sequence[Row], key: str) -> dict[str, float]:
    return {
        str(label): mmbench_circular(group)
        for label, group in sorted(_groups(rows, lambda r: str(_meta(r, key))).items())
    }


def mmbench_circular_by_category(rows: Sequence[Row]) -> dict[str, float]:
    """CircularEval accuracy per MMBench category (lmms-eval's `category_acc`)."""
    return _circular_by(rows, "mmbench_category")


def mmbench_circular_by_l2_category(rows: Sequence[Row]) -> dict[str, float]:
    """CircularEval accuracy per L2 category (lmms-eval's `l2_category_acc`)."""
    return _circular_by(rows, "l2_category")


# --- judge-scored tasks (rows carry `judge_score`, or `judge_error` when the judge failed) ------
# Rows with a judge error are left out and counted apart (results.json `judge.judge_errors`);
# with no graded row at all the value is NaN (reported as null), never 0.


def _graded(rows: Sequence[Row]) -> list[float]:
    return [float(r["judge_score"]) for r in rows if r.get("judge_score") is not None]


def _mean_or_nan(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def mmvet_score(rows: Sequence[Row]) -> float:
    """MM-Vet total: the mean 0.0-1.0 correctness over judged answers (x100 in the paper)."""
    return _mean_or_nan(_graded(rows))


def mmvet_by_capability(rows: Sequence[Row]) -> dict[str, float]:
    """Per capability (rec, ocr, know, gen, spat, math): the mean over answers needing it."""
    caps = sorted({c for r in rows for c in (_meta(r, "capabilities") or ())})
    return {c: _mean_or_nan(_graded([r for r in rows if c in (_meta(r, "capabilities") or ())]))
            for c in caps}  # fmt: skip


def mmhal_score(rows: Sequence[Row]) -> float:
    """MMHal-Bench average rating, 0-6."""
    return _mean_or_nan(_graded(rows))


def mmhal_hallucination_rate(rows: Sequence[Row]) -> float:
    """Share of judged answers rated below 3 (the rubric's "with hallucination" ratings)."""
    graded = _graded(rows)
    return _mean_or_nan([1.0 if g < 3 else 0.0 for g in graded])


def mmhal_by_type(rows: Sequence[Row]) -> dict[str, float]:
    """Average rating per question type (attribute, adversarial, comparison, counting, ...)."""
    return {
        str(t): mmhal_score(group)
        for t, group in sorted(_groups(rows, lambda r: str(_meta(r, "question_type"))).items())
    }
