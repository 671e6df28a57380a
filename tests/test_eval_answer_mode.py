"""`--answer-mode choice`: close-ended items answered by one prefill over their answer set.

A random tiny LLaVA rarely writes an answer word, so the fixture plants the vocabulary rows of
the answer words (random directions, large norm) in copies of one tiny model: one for yes/no, one
for colour words. Greedy decoding then writes one of them, and with `max_new_tokens=1` the greedy
answer is exactly a choice on many items; there the choice-mode prediction must be identical.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from mbpo_bench.cli.main import main
from mbpo_bench.data.items import TaskItem
from mbpo_bench.evaluation.choices import (
    FALLBACK_NO_SET,
    FALLBACK_SHARED,
    Choices,
    answer_forms,
    item_choices,
    token_reader,
)
from mbpo_bench.evaluation.schema import Results
from mbpo_bench.evaluation.scoring import recompute_results
from mbpo_bench.models.protocol import Prompt

FIXTURES = Path(__file__).parent / "fixtures"
YES_NO_TASKS = "mbpo_embedded_existence,mbpo_pope_random,mbpo_embedded_count"
YES_NO_WORDS = ("yes", " yes", "no", " no")
COLOUR_WORDS = tuple(w for c in (["red", "green", "blue", "yellow", "purple", "orange", "white", "gray", "black", "pink", "brown"]) for w in (c, " " + c))  # fmt: skip


def _plant(src: Path, dst: Path, words: Sequence[str], seed: int) -> Path:
    """A copy of `src` whose lm_head rows of `words`' first tokens dominate every other row."""
    from mbpo_bench.models import load_model

    shutil.copytree(src, dst)
    vlm = load_model(dst, device="cpu", dtype="float32")
    ids = sorted({vlm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words})
    head = vlm.hf_model.lm_head.weight  # type: ignore[attr-defined]
    u = torch.randn(len(ids), head.shape[1], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        head[ids] = 60.0 * u / u.norm(dim=1, keepdim=True)
    vlm.model.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from mbpo_bench.models import build_tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("answer_mode")
    cfg = root / "embedded.yaml"
    cfg.write_text("n_train: 8\nn_eval_per_cell: 4\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(cfg))
        mp.setenv("MBPO_BENCH_DATA", str(FIXTURES))
        base = build_tiny_model("llava", root / "base", seed=0)
        yield {
            "root": root,
            "yes_no": _plant(base, root / "yes_no", YES_NO_WORDS, seed=1),
            "colour": _plant(base, root / "colour", COLOUR_WORDS, seed=2),
            "runs": {},
        }


def _run(env: dict[str, Any], model: str, tasks: str, mode: str, probes: str) -> Path:
    """One eval run (cached per arguments); greedy answers are one token long."""
    key = (model, tasks, mode, probes)
    if key not in env["runs"]:
        folder = env["root"] / f"run{len(env['runs'])}"
        code = main(["eval", "--model", str(env[model]), "--tasks", tasks, "--output", str(folder),
                     "--limit", "4", "--batch-size", "3", "--probes", probes, "--no-progress",
                     "--max-new-tokens", "1", "--answer-mode", mode,
                     "--set", "probes.adversarial_steps=1",
                     "--set", "bootstrap.n_resamples=20"])  # fmt: skip
        assert code == 0
        env["runs"][key] = folder
    out: Path = env["runs"][key]
    return out


def _rows(run: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    rows = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    return {(r["task"], r["probe"], r["doc_id"]): r for r in rows}


@pytest.mark.parametrize(
    ("model", "tasks", "probes"),
    [
        ("yes_no", YES_NO_TASKS, "image,blind,mismatched,noise,adversarial,iig"),
        ("colour", "mbpo_embedded_color", "image,blind"),
    ],
)
def test_choice_equals_greedy_where_greedy_wrote_a_choice(
    env: dict[str, Any], model: str, tasks: str, probes: str
) -> None:
    gen = _rows(_run(env, model, tasks, "generate", probes))
    cho = _rows(_run(env, model, tasks, "choice", probes))
    assert gen.keys() == cho.keys()
    compared: dict[str, int] = {}
    for key, c in cho.items():
        if c.get("answer_mode") != "choice":
            continue
        forms = {f.strip() for f in c["choice_logprobs"]}
        assert c["response"] in forms  # the prediction is a choice, written as the model would
        g = gen[key]
        assert g["answer_mode"] == "generate" and "fallback" not in g
        if g["response"] in forms:
            assert c["response"] == g["response"], key
            assert (c["parsed"], c["correct"]) == (g["parsed"], g["correct"])
            compared[key[0]] = compared.get(key[0], 0) + 1
    choice_tasks = {k[0] for k, r in cho.items() if r.get("answer_mode") == "choice"}
    assert choice_tasks and all(compared.get(t, 0) > 0 for t in choice_tasks), compared


def test_free_form_numbers_fall_back_and_are_counted(env: dict[str, Any]) -> None:
    probes = "image,blind,mismatched,noise,adversarial,iig"
    out = _run(env, "yes_no", YES_NO_TASKS, "choice", probes)
    res = Results.read(out / "results.json")
    assert res == recompute_results(out)
    assert res.answer_mode == "choice" and res.config["answer_mode"] == "choice"
    count = res.tasks["mbpo_embedded_count"]
    existence = res.tasks["mbpo_embedded_existence"]
    generation = [p for p in count.probes if p != "iig"]
    assert len(generation) == 5 and count.probes["iig"].answered == {}
    for probe in generation:
        assert count.probes[probe].answered == {"generate": count.probes[probe].n}
        assert existence.probes[probe].answered == {"choice": existence.probes[probe].n}
    n_count = sum(count.probes[p].n for p in generation)
    assert res.fallbacks == {FALLBACK_NO_SET: n_count}
    assert res.answered["generate"] == n_count
    assert sum(res.answered.values()) == sum(
        p.n for t in res.tasks.values() for name, p in t.probes.items() if name != "iig"
    )
    # the metrics are what the samples say, probe by probe
    rows = _rows(out)
    for task, result in res.tasks.items():
        for probe, pr in result.probes.items():
            if probe == "iig":
                continue
            correct = [r["correct"] for k, r in rows.items() if k[:2] == (task, probe)]
            assert pr.metrics["accuracy"].value == pytest.approx(sum(correct) / len(correct))
    gen = Results.read(_run(env, "yes_no", YES_NO_TASKS, "generate", probes) / "results.json")
    assert gen.answer_mode == "generate" and gen.fallbacks == {}
    assert set(gen.answered) == {"generate"}


def test_report_flags_runs_of_different_answer_modes(env: dict[str, Any]) -> None:
    from mbpo_bench.reporting import render_report

    probes = "image,blind"
    gen = _run(env, "colour", "mbpo_embedded_color", "generate", probes)
    cho = _run(env, "colour", "mbpo_embedded_color", "choice", probes)
    text = render_report([gen, cho], baseline=gen, out=env["root"] / "r.md").read_text()
    assert "different answer modes" in text and "| answer mode |" in text
    assert "choice (8 choice)" in text
    same = render_report([gen], baseline=None, out=env["root"] / "same.md").read_text()
    assert "answer mode" not in same


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--answer-mode", "choise"], "unknown answer mode 'choise' (did you mean: choice?)"),
        (["--set", "answer_mode=choise"], "did you mean: choice?"),
        (["--answer-mode", "choice", "--backend", "lmms-eval", "--probes", "image"], "lmms-eval"),
    ],
)
def test_bad_answer_mode_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    out = tmp_path / "o"
    code = main(["eval", "--model", "m", "--tasks", "embedded", "--output", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and needle in err
    assert not out.exists()


# ---- choice sets and first tokens, without a model ----------------------------------------------


def _item(verifier: str, options: Sequence[str] = ()) -> TaskItem:
    return TaskItem("t", "1", "q", options[0] if options else "yes", verifier, None, tuple(options))


@pytest.fixture(scope="module")
def read() -> Any:
    from mbpo_bench.models.tokenizer import build_tokenizer

    return token_reader(build_tokenizer("llava"))


def test_answer_sets_come_from_verifier_and_template() -> None:
    assert answer_forms("yesno", (), "{question}") == {
        "yes": ["yes", "Yes", " yes", " Yes"],
        "no": ["no", "No", " no", " No"],
    }
    opts = ("red", "blue")
    assert answer_forms("multiple_choice", opts, "{question} Options: {options}.") == {
        "A": ["red", "Red", " red", " Red"],
        "B": ["blue", "Blue", " blue", " Blue"],
    }
    lettered = answer_forms("multiple_choice", opts, "{question}\n{choices}")
    assert lettered == {"A": ["A", " A"], "B": ["B", " B"]}
    assert set(answer_forms("multiple_choice", (), "{question}") or {}) == set("ABCDE")
    assert answer_forms("number", ("2", "3"), "{question}") == {"2": ["2", " 2"], "3": ["3", " 3"]}
    assert answer_forms("number", (), "{question}") is None
    assert answer_forms("short_word", (), "{question}") is None
    assert answer_forms("", (), "{question}") is None  # open-ended task (no verifier)


def test_shared_first_tokens(read: Any) -> None:
    # "Green" and "Gray" both start with "G" in the tiny vocabulary: that variant is dropped
    got = item_choices(_item("multiple_choice", ("green", "gray")), "{options}", read)
    assert isinstance(got, Choices) and "Green" not in got.texts and "Gray" not in got.texts
    assert {"green", "gray", " green", " gray"} <= set(got.texts)
    assert len(set(got.tokens)) == len(got.tokens)
    # "10" and "12" start with "1" as the task writes them: the item is generated instead
    assert item_choices(_item("number", ("10", "12")), "{question}", read) == FALLBACK_SHARED
    assert item_choices(_item("number", ()), "{question}", read) == FALLBACK_NO_SET
    yes_no = item_choices(_item("yesno"), "{question}", read)
    assert isinstance(yes_no, Choices) and {"yes", "no", " yes", " no"} <= set(yes_no.texts)


class _FakeVLM:
    """Prefill prefers the 2nd choice string; generate writes 'seven'."""

    family = "fake"
    image_size = 4

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.generated: list[int] = []
        self.choice_calls = 0

    def choice_logprobs(
        self, prompts: Sequence[Prompt], choices: Sequence[str], *, batch_size: int = 16
    ) -> torch.Tensor:
        self.choice_calls += 1
        out = torch.full((len(prompts), len(choices)), -5.0)
        out[:, 1] = -0.1
        return out

    def generate(self, prompts: Sequence[Prompt], **kw: Any) -> list[list[str]]:
        self.generated.append(len(prompts))
        return [["seven\nmore"] for _ in prompts]


def test_mixed_batch_answers_by_choice_and_generates_the_rest() -> None:
    from mbpo_bench.evaluation.batches import _answers
    from mbpo_bench.evaluation.config import EvalConfig
    from mbpo_bench.evaluation.plan import TaskInfo, plan_task
    from mbpo_bench.evaluation.schema import GenerationSettings
    from mbpo_bench.models.tokenizer import build_tokenizer

    items = [_item("yesno"), _item("number"), _item("yesno")]
    items = [TaskItem("t", str(i), "q", it.target, it.verifier) for i, it in enumerate(items)]
    info = TaskInfo("t", "1", "{question}", "yesno", GenerationSettings(4, until=["\n"]))
    plan = plan_task(info, items, [], ["image"], 0)
    vlm = _FakeVLM(build_tokenizer("llava"))
    config = EvalConfig(answer_mode="choice")
    prompts = [Prompt("q") for _ in items]
    got = _answers(vlm, plan, items, prompts, None, config, seed=0)  # type: ignore[arg-type]
    assert vlm.choice_calls == 1 and vlm.generated == [1]  # one prefill, one generate sub-batch
    assert [how["answer_mode"] for _, how in got] == ["choice", "generate", "choice"]
    assert got[1] == ("seven", {"answer_mode": "generate", "fallback": FALLBACK_NO_SET})
    assert got[0][0] == got[2][0] and got[0][0] in ("yes", "Yes", "no", "No")
    assert got[0][0].strip() == got[0][0]
    generate_only = _answers(vlm, plan, items, prompts, None, EvalConfig(), seed=0)  # type: ignore[arg-type]
    assert [how for _, how in generate_only] == [{"answer_mode": "generate"}] * 3
