"""Data-parallel follow-ups on two gloo processes forked from this one (as in
test_distributed_helpers.py; the `two_ranks` fixture of conftest.py), with fake models so that each check takes about a second:

- the SFT step divides by the GLOBAL answer-token count: ranks holding different token counts
  give the one-process gradient and loss (a per-rank divisor would not);
- mining splits its batches over the ranks and ends with the one-process pairs and statistics,
  and rank 0 alone writes a pairs.parquet byte-identical to the one-process file;
- `train`, `mine` and `eval` print the config and the summary on rank 0 only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import torch

from mbpo_bench import parallel
from mbpo_bench.cli.main import main
from mbpo_bench.data.items import TaskItem
from mbpo_bench.models.protocol import Prompt

torch.set_num_threads(1)

DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture(autouse=True)
def _one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in DIST_ENV:
        monkeypatch.delenv(key, raising=False)


# ---------------------------------------------------------------- SFT: global token normaliser


class _Tokenizer:
    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, Any]:
        return {"input_ids": [[sum(map(ord, w)) % 50 for w in t.split()] for t in texts]}


class _ScoringVLM:
    """Per-token log-probs -softplus(linear(features)) of a float64 linear layer; answer tokens
    + EOS are in the mask, as in the real `answer_logprobs`."""

    image_size = 8

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.module = torch.nn.Linear(3, 1, dtype=torch.float64)
        self.tokenizer = _Tokenizer()

    def answer_logprobs(
        self, prompts: list[Prompt], answers: list[str], requires_grad: bool = False
    ) -> Any:
        ids = [[*row, 50] for row in self.tokenizer(answers)["input_ids"]]  # + EOS
        width = max(len(row) for row in ids)
        feats = torch.zeros(len(ids), width, 3, dtype=torch.float64)
        mask = torch.zeros(len(ids), width, dtype=torch.bool)
        for b, row in enumerate(ids):
            for t, tok in enumerate(row):
                feats[b, t] = torch.tensor([tok / 50, t / 10, len(prompts[b].text) / 10])
                mask[b, t] = True
        logps = -torch.nn.functional.softplus(self.module(feats).squeeze(-1))
        return SimpleNamespace(logps=logps, mask=mask)


@dataclass
class _Policy:
    vlm: _ScoringVLM

    @property
    def module(self) -> torch.nn.Module:
        return self.vlm.module

    def train_mode(self, on: bool) -> None:
        pass

    def compiled(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the real Policy's, with compile_layers off


# answers of 1..7 words: ranks of a 4-item batch hold different token counts
ANSWER_WORDS = (1, 6, 2, 7, 3, 1, 5, 2)


def _sft_step(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], dict[str, Any]]:
    """SFT's real step (`sft.make_step`: one optimizer step, 2 micro-batches of the global
    batch) on the fake model; returns the rank-averaged gradient and loss, as the training loop
    sees them."""
    from mbpo_bench.trainers import loop, sft

    items = [
        TaskItem("t", str(i), f"q{'?' * i}", " ".join(f"w{i}{k}" for k in range(n)), "")
        for i, n in enumerate(ANSWER_WORDS)
    ]
    policy = _Policy(_ScoringVLM())
    monkeypatch.setattr(
        "mbpo_bench.trainers.data.item_prompts",
        lambda its: [Prompt(it.question) for it in its],
    )
    config = sft.SFTConfig(model="fake", runtime=loop.RuntimeConfig(device="cpu"),
                           optim=loop.OptimConfig(batch_size=4, grad_accum=2, steps=1))  # fmt: skip

    def one_step(rank: int) -> dict[str, Any]:
        loop.setup_runtime(config.runtime)
        step_fn, _ = sft.make_step(config, policy, items)  # type: ignore[arg-type]
        local = step_fn(0)
        merged = loop._across_ranks(local)
        params = list(policy.module.parameters())
        parallel.all_reduce_grads(params)
        grads = [p.grad for p in params]
        assert all(g is not None for g in grads)
        return {"grads": grads, "loss": merged.loss,
                "metrics": merged.metrics, "local_tokens": local.tokens}  # fmt: skip

    return one_step


def test_sft_gradient_with_uneven_tokens_on_two_ranks_equals_one_process(
    monkeypatch: pytest.MonkeyPatch, two_ranks: Any
) -> None:
    step = _sft_step(monkeypatch)
    two = two_ranks(step)
    one = step(0)  # after the fork: the parent stays a plain one-process run
    assert two[0]["local_tokens"] != two[1]["local_tokens"], "equal counts: the test is empty"
    assert two[0]["local_tokens"] + two[1]["local_tokens"] == one["local_tokens"]
    for r in (0, 1):
        for g2, g1 in zip(two[r]["grads"], one["grads"], strict=True):
            torch.testing.assert_close(g2, g1, rtol=1e-12, atol=1e-14)
        assert two[r]["loss"] == pytest.approx(one["loss"], rel=1e-12)
        assert two[r]["metrics"] == pytest.approx(one["metrics"], rel=1e-12)


# ------------------------------------------------------------------- mining: split and gathered


def _fake_iig(vlm: Any, prompts: list[Prompt], answers: list[str], *, batch_size: int,
              **_: Any) -> torch.Tensor:  # fmt: skip
    """Depends on the internal batching like a real batched model would: aligned chunks of
    `batch_size` give the same numbers as one call over everything."""
    out = []
    for start in range(0, len(answers), batch_size):
        chunk = answers[start : start + batch_size]
        out += [(int(a[1:]) * 7 % 10) / 10 + 0.001 * len(chunk) for a in chunk]
    return torch.tensor(out)


def _fake_negatives(vlm: Any, items: list[TaskItem], cfg: Any, batch_seed: int) -> Any:
    """A rejected answer per item drawn from the batch seed (as PGD's random start is)."""
    vlm.seeds.append(batch_seed)
    r = torch.rand(len(items), generator=torch.Generator().manual_seed(batch_seed)).tolist()
    answers = [it.target if x < 0.3 else f"wrong{x:.3f}" for it, x in zip(items, r, strict=True)]
    return answers, {"before": r, "after": [x - 1.5 for x in r], "linf": [0.03] * len(items)}


def _miner(monkeypatch: pytest.MonkeyPatch, null: str, tmp_path: Path) -> Callable[[int], Any]:
    from mbpo_bench.trainers import mining

    items = [TaskItem("t", str(i), f"q{i}", f"t{i}", "", image_path=Path(f"/none/{i}.png"))
             for i in range(11)]  # fmt: skip
    monkeypatch.setattr(mining, "item_prompts", lambda its: [Prompt(it.question) for it in its])
    monkeypatch.setattr("mbpo_bench.modality.iig.compute_iig", _fake_iig)
    monkeypatch.setattr(mining, "_negatives", _fake_negatives)
    # 8 of 11 selected, batches of 3: 3 batches, rank 0 runs two of them, rank 1 one
    cfg = mining.MiningConfig(batch_size=3, iig_top_fraction=0.7, iig_null=null,  # type: ignore[arg-type]
                              limit=None, seed=5)  # fmt: skip

    def mine(rank: int) -> Any:
        vlm = SimpleNamespace(
            model=SimpleNamespace(eval=lambda: None), image_size=8, seeds=[],
            generate=lambda prompts, **_: [[f"t{p.text[1:]}"] for p in prompts],  # clean: right
        )  # fmt: skip
        out = tmp_path / f"rank{rank}" / "pairs.parquet"
        pairs, stats = mining.mine_to_file(vlm, items, cfg, out)  # type: ignore[arg-type]
        return {"pairs": pairs, "stats": stats.as_dict(), "seeds": vlm.seeds, "out": out}

    return mine


@pytest.mark.parametrize("null", ["text", "noise", "mismatched"])
def test_mining_on_two_ranks_writes_the_one_process_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, null: str, two_ranks: Any
) -> None:
    mine = _miner(monkeypatch, null, tmp_path / "two")
    two = two_ranks(mine)
    one = _miner(monkeypatch, null, tmp_path / "one")(0)
    assert one["stats"]["selected"] == 8 and 0 < one["stats"]["kept"] < 8
    assert sorted(two[0]["seeds"] + two[1]["seeds"]) == one["seeds"]  # each batch once
    assert two[0]["seeds"] and two[1]["seeds"]  # both ranks attacked
    for r in (0, 1):
        assert two[r]["pairs"] == one["pairs"] and two[r]["stats"] == one["stats"]
    assert two[0]["out"].read_bytes() == one["out"].read_bytes()
    stats_file = Path(two[0]["out"]).with_suffix(".stats.json")
    assert json.loads(stats_file.read_text()) == json.loads(
        one["out"].with_suffix(".stats.json").read_text()
    )
    assert not two[1]["out"].exists()  # rank 1 wrote nothing


# ------------------------------------------------------------------- CLI: rank 0 prints


class _LoopResult:
    steps = 1
    last: ClassVar[dict[str, float]] = {"loss": 0.5}


class _Stats:
    def as_dict(self) -> dict[str, Any]:
        return {"candidates": 3, "selected": 2, "flip_rate": 0.5}


def _eval_results() -> Any:
    from mbpo_bench.evaluation.schema import SCHEMA_VERSION, BootstrapSettings, ModelInfo, Results

    return Results(SCHEMA_VERSION, ModelInfo("m"), ["image"], BootstrapSettings(10, 0.95, 0), {},
                   {}, None, "3.11", None, 0.0, 0.0, None, 0, 0, {})  # fmt: skip


@pytest.mark.parametrize("rank", ["0", "1"])
def test_commands_print_on_rank_zero_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rank: str
) -> None:
    monkeypatch.setattr("mbpo_bench.trainers.sft.run", lambda *a, **k: _LoopResult())
    monkeypatch.setattr("mbpo_bench.trainers.mining.run_mine", lambda *a, **k: ([], _Stats()))
    monkeypatch.setattr("mbpo_bench.evaluation.api.run_eval", lambda *a, **k: _eval_results())
    monkeypatch.setattr("mbpo_bench.models.loading.validate_model", lambda model: "llava")
    monkeypatch.setenv("RANK", rank)  # is_main reads the environment only
    monkeypatch.setenv("WORLD_SIZE", "2")
    commands = [
        ["train", "sft", "--model", "m", "--output", str(tmp_path / "t")],
        ["mine", "--model", "m", "--output", str(tmp_path / "m")],
        ["eval", "--model", "m", "--tasks", "embedded", "--output", str(tmp_path / "e")],
    ]
    for argv in commands:
        assert main(argv) == 0
        out = capsys.readouterr()
        printed = out.out + out.err
        if rank == "0":
            assert str(tmp_path) in out.out, argv  # the summary names the output folder
            if argv[0] != "eval":  # eval's config is printed inside run_eval (faked here)
                assert "model: m" in out.err, argv
        else:
            assert printed == "", (argv, printed)
