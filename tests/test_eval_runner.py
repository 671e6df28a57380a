"""The evaluation runner against the VisionLanguageModel protocol, with a fake model.

The fake answers "yes" when the image is bright and "no" otherwise (and "no" without an image),
so every probe's accuracy is known in closed form.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from mbpo_bench.data.images import BadImageError
from mbpo_bench.data.items import TaskItem
from mbpo_bench.evaluation.config import EvalConfig
from mbpo_bench.evaluation.plan import TaskInfo, batches, plan_task
from mbpo_bench.evaluation.runner import check_images, evaluate
from mbpo_bench.evaluation.schema import GenerationSettings, ModelInfo, Results
from mbpo_bench.evaluation.scoring import recompute_results
from mbpo_bench.models.protocol import AnswerLogprobs, Prompt
from mbpo_bench.runs import RunDir

torch.set_num_threads(1)


class FakeVLM:
    family = "fake"
    name = "fake"
    model: Any = None
    processor: Any = None
    tokenizer: Any = None
    image_size = 4
    protocol = "native"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.fail_after = fail_after

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def processed_size(self, image: Any) -> tuple[int, int]:
        return (image.size[1], image.size[0])

    def num_image_tokens(self, size: tuple[int, int] | None = None) -> int:
        return 1

    def _bright(self, p: Prompt) -> float | None:
        if p.image is None:
            return None
        return float(torch.tensor(list(p.image.getdata()), dtype=torch.float32).mean() / 255)

    def generate(
        self, prompts: Sequence[Prompt], *, pixel_images: Any = None, **kw: Any
    ) -> list[list[str]]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # the kill in the middle of a run
        self.batch_sizes.append(len(prompts))
        out = []
        for i, p in enumerate(prompts):
            b = float(pixel_images[i].mean()) if pixel_images is not None else self._bright(p)
            out.append(["Yes." if b is not None and b > 0.5 else "No."])
        return out

    def answer_logprobs(
        self,
        prompts: Sequence[Prompt],
        answers: Sequence[str],
        *,
        pixel_images: Any = None,
        requires_grad: bool = False,
    ) -> AnswerLogprobs:
        rows = []
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            want = 1.0 if a.lower().startswith("yes") else 0.0
            if pixel_images is not None:
                b = pixel_images[i].mean()
            else:
                bb = self._bright(p)
                b = torch.tensor(0.5 if bb is None else bb)
            rows.append(torch.stack([-((b - want) ** 2), -((b - want) ** 2) / 2]))
        logps = torch.stack(rows)
        return AnswerLogprobs(logps, torch.ones_like(logps, dtype=torch.bool))

    def pixels_to_inputs(self, pixel_images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixel_values": pixel_images}

    def images_to_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        t = [
            torch.tensor(list(im.getdata()), dtype=torch.float32).T.reshape(3, *im.size) / 255
            for im in images
        ]
        return torch.stack(t)


INFO = TaskInfo(
    "toy", "1", "{question}", "yesno", GenerationSettings(max_new_tokens=4, until=["\n"])
)


def make_items(tmp_path: Path, n: int = 12) -> list[TaskItem]:
    items = []
    for i in range(n):
        bright = i % 3 != 0  # 8 of 12 targets are yes
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (4, 4), (230, 230, 230) if bright else (20, 20, 20)).save(path)
        target = "yes" if bright else "no"
        prior = "consistent" if i % 2 else "counter"
        q = "Is the image bright?" + " really" * (i % 4)
        items.append(TaskItem("toy", f"d{i:02d}", q, target, "yesno", path, meta={"prior": prior}))
    return items


def run(
    tmp_path: Path, items: list[TaskItem], vlm: FakeVLM, out: str = "run", **cfg: Any
) -> Results:
    config = EvalConfig(model="fake", tasks="toy", output=str(tmp_path / out), batch_size=5, **cfg)
    config.bootstrap.n_resamples = 200
    rundir = RunDir.open(Path(config.output), config=config)
    return evaluate(
        rundir, [(INFO, items, [])], vlm, ModelInfo("fake", "fake"), config, progress=False
    )


def test_metrics_of_every_probe(tmp_path: Path) -> None:
    res = run(tmp_path, make_items(tmp_path), FakeVLM())
    t = res.tasks["toy"]
    assert set(t.probes) == {"image", "blind", "mismatched", "noise", "iig"}
    assert t.probes["image"].metrics["accuracy"].value == 1.0
    assert t.probes["blind"].metrics["accuracy"].value == pytest.approx(4 / 12)
    assert t.balance["visual_reliance_blind"].value == pytest.approx(8 / 12)
    assert t.balance["predicted_yes_ratio"].value == pytest.approx(8 / 12)
    assert t.balance["predicted_yes_ratio"].higher_is_better is None
    assert t.balance["counter_prior_gap"].value == pytest.approx(0.0)
    assert (
        t.probes["iig"].metrics["iig"].value is not None
        and t.probes["iig"].metrics["iig"].value > 0
    )
    assert t.balance["iig_mean"] == t.probes["iig"].metrics["iig"]
    m = t.probes["blind"].metrics["accuracy"]
    assert m.ci_low is not None and m.ci_high is not None and m.ci_low <= m.value <= m.ci_high
    assert m.n == 12 and t.n_items == 12


def test_results_json_equals_recomputation_from_jsonl(tmp_path: Path) -> None:
    res = run(tmp_path, make_items(tmp_path), FakeVLM())
    folder = tmp_path / "run"
    on_disk = Results.read(folder / "results.json")
    assert on_disk == res == recompute_results(folder)
    assert json.loads((folder / "status.json").read_text())["finished"] is True
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 12 * 5 == res.n_samples
    assert {
        "doc_id",
        "probe",
        "prompt",
        "response",
        "parsed",
        "correct",
        "score",
        "format",
        "target",
    } <= set(rows[0])


def test_batches_are_length_sorted_and_fixed(tmp_path: Path) -> None:
    items = make_items(tmp_path)
    plan = plan_task(INFO, items, [], ["image", "blind"], seed=0)
    bs = batches(plan, 5)
    assert [len(b.doc_ids) for b in bs] == [5, 5, 2, 5, 5, 2]
    lengths = [len(plan.items[d].question) for d in bs[0].doc_ids + bs[1].doc_ids]
    assert lengths == sorted(lengths)


def comparable(res: Results) -> dict[str, Any]:
    d = res.to_dict()
    for key in (
        "wall_time_s",
        "compute_time_s",
        "samples_per_s",
        "packages",
        "git_sha",
        "python",
        "device",
    ):
        d.pop(key)
    d["config"].pop("output")
    return d


def test_interrupted_run_resumes_to_identical_results(tmp_path: Path) -> None:
    items = make_items(tmp_path)
    full = run(tmp_path, items, FakeVLM(), out="full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, items, FakeVLM(fail_after=3), out="cut")
    folder = tmp_path / "cut"
    assert not (folder / "results.json").exists()
    # a kill -9 in the middle of an append leaves a torn last line
    with (folder / "samples.jsonl").open("a") as fh:
        fh.write('{"task": "toy", "probe": "bli')
    done_before = len((folder / "samples.jsonl").read_text().splitlines()) - 1
    vlm = FakeVLM()
    resumed = run(tmp_path, items, vlm, out="cut")
    assert comparable(resumed) == comparable(full)
    assert sum(vlm.batch_sizes) == 12 * 4 - done_before  # only unfinished batches ran again
    assert all(size == 5 or size == 2 for size in vlm.batch_sizes)


def test_adversarial_probe_lowers_accuracy(tmp_path: Path) -> None:
    items = make_items(tmp_path, 6)
    config = EvalConfig(model="fake", output=str(tmp_path / "adv"), batch_size=3)
    config.probes.names = ["image", "adversarial"]
    config.probes.adversarial_eps = 0.6
    config.probes.adversarial_alpha = 0.2
    config.probes.adversarial_steps = 4
    config.bootstrap.n_resamples = 50
    rundir = RunDir.open(Path(config.output), config=config)
    res = evaluate(
        rundir, [(INFO, items, [])], FakeVLM(), ModelInfo("fake"), config, progress=False
    )
    t = res.tasks["toy"]
    assert t.probes["image"].metrics["accuracy"].value == 1.0
    assert t.probes["adversarial"].metrics["accuracy"].value == 0.0
    rows = [json.loads(x) for x in (tmp_path / "adv" / "samples.jsonl").read_text().splitlines()]
    adv = [r for r in rows if r["probe"] == "adversarial"]
    assert all(r["attack_logp_after"] < r["attack_logp_before"] for r in adv)


def test_bad_image_fails_by_default_and_is_skipped_on_request(tmp_path: Path) -> None:
    items = make_items(tmp_path, 6)
    bad = items[2].image_path
    assert bad is not None
    bad.write_bytes(b"not a png")
    with pytest.raises(BadImageError, match=rf"toy/d02.*{bad.name}"):
        check_images(items, skip=False)
    good, skipped = check_images(items, skip=True)
    assert [s.doc_id for s in skipped] == ["d02"] and len(good) == 5
    config = EvalConfig(
        model="fake", output=str(tmp_path / "skip"), batch_size=4, skip_bad_items=True
    )
    config.bootstrap.n_resamples = 50
    rundir = RunDir.open(Path(config.output), config=config)
    res = evaluate(
        rundir, [(INFO, good, skipped)], FakeVLM(), ModelInfo("fake"), config, progress=False
    )
    assert res.items_skipped == 1 and res.tasks["toy"].n_items == 5
    assert res.tasks["toy"].items_skipped[0].reason.startswith("item toy/d02")


def test_a_probe_registered_as_one_row_is_offered_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe table is the one place to add a generation probe: a throwaway `white` probe
    (every item shown a white image) added as one row is accepted by --probes and evaluated."""
    from mbpo_bench.cli.eval_cmd import build_config
    from mbpo_bench.evaluation import probes
    from mbpo_bench.evaluation.config import ProbeConfig

    def white(item: TaskItem, image_size: int, mismatched: Any, seed: int) -> probes.ProbeInput:
        image = Image.new("RGB", (4, 4), (250, 250, 250))
        return probes.ProbeInput(Prompt(item.question, image), "white")

    row = probes.ProbeSpec("a white image", white, default=False)
    monkeypatch.setitem(probes.PROBE_TABLE, "white", row)
    assert probes.parse_probes("white,image") == ("image", "white")
    config = build_config(model="m", tasks="toy", output=tmp_path / "o", probes="image,white")
    assert config.probes.names == ["image", "white"]
    res = run(
        tmp_path, make_items(tmp_path), FakeVLM(), probes=ProbeConfig(names=["image", "white"])
    )
    t = res.tasks["toy"]
    assert set(t.probes) == {"image", "white"}
    assert t.probes["white"].metrics["accuracy"].value == pytest.approx(8 / 12)  # always "yes"
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    ]
    assert {r["image"] for r in rows if r["probe"] == "white"} == {"white"}
