"""The lmms-eval side: our entry-point model resolves in lmms-eval and batches generation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lmms
pytest.importorskip("lmms_eval")


def test_plugin_module_imports_without_lmms_eval_loaded() -> None:
    code = (
        "import sys\nimport mbpo_bench.evaluation.lmms_plugin as p\n"
        "print('LMMS=' + str('lmms_eval' in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "LMMS=False"


def test_entry_point_model_resolves_in_lmms_eval() -> None:
    """Through lmms-eval's own registry (which reads the `lmms_eval.models` entry points)."""
    code = (
        "from lmms_eval.models import get_model, MODEL_REGISTRY_V2\n"
        "from lmms_eval.api.model import lmms\n"
        "r = MODEL_REGISTRY_V2.resolve('mbpo')\n"
        "cls = get_model('mbpo')\n"
        "print(r.model_type, r.class_path, cls.__module__ + '.' + cls.__name__, issubclass(cls, lmms))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "simple",
        "mbpo_bench.evaluation.lmms_plugin.MbpoLmms",
        "mbpo_bench.evaluation.lmms_model.MbpoLmms",
        "True",
    ]


class _RecordingVLM:
    image_size = 8
    device = "cpu"

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], dict[str, Any]]] = []

    def generate(self, prompts: list[Any], **kw: Any) -> list[list[str]]:
        self.calls.append((list(prompts), kw))
        return [
            [f"{p.text} -> {'img' if p.image is not None else 'none'}\nSTOP more"] for p in prompts
        ]


def test_generate_until_batches_sorts_and_restores_order() -> None:
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from mbpo_bench.evaluation.lmms_plugin import MbpoLmms

    vlm = _RecordingVLM()
    lm = MbpoLmms(pretrained="unused", vlm=vlm, batch_size=2)
    docs = {i: {"img": Image.new("RGB", (4, 4))} for i in range(5)}
    lm.task_dict = {"t": {"test": docs}}
    greedy = {"max_new_tokens": 3, "until": ["\n"], "temperature": 0}

    def visual(doc: dict[str, Any]) -> list[Any]:
        return [doc["img"]]

    texts = ["q" * (5 - i) for i in range(5)]
    reqs = [
        Instance(
            "generate_until",
            (texts[i], dict(greedy), visual, i, "t", "test"),
            i,
            {"task": "t", "doc_id": i, "repeats": 1},
        )
        for i in range(5)
    ]
    out = lm.generate_until(reqs)
    assert out == [f"{t} -> img" for t in texts]
    assert [len(c[0]) for c in vlm.calls] == [2, 2, 1]
    first = [p.text for p in vlm.calls[0][0]]
    assert first == ["q", "qq"]  # shortest prompts first
    assert vlm.calls[0][0][0].image.size == (4, 4)  # as stored: the model's protocol resizes
    assert vlm.calls[0][1]["max_new_tokens"] == 3 and vlm.calls[0][1]["do_sample"] is False


def test_unknown_model_args_are_refused() -> None:
    from mbpo_bench.evaluation.lmms_plugin import MbpoLmms

    with pytest.raises(TypeError, match="unknown model_args"):
        MbpoLmms(pretrained="x", vlm=_RecordingVLM(), colour="red")


def test_runs_a_tiny_model(tmp_path: Path) -> None:
    import torch
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from mbpo_bench.evaluation.lmms_plugin import MbpoLmms
    from mbpo_bench.models import build_tiny_model, load_model
    from mbpo_bench.models.protocol import Prompt

    torch.set_num_threads(1)
    folder = build_tiny_model("llava", tmp_path / "m")
    lm = MbpoLmms(pretrained=str(folder), batch_size=4, device="cpu")
    img = Image.new("RGB", (lm.vlm.image_size,) * 2, (200, 30, 30))
    lm.task_dict = {"t": {"test": {0: {"i": img}, 1: {"i": img}}}}
    gen = {"max_new_tokens": 4, "until": ["\n"]}
    reqs = [
        Instance(
            "generate_until",
            (f"Is it red {i}?", dict(gen), lambda d: [d["i"]], i, "t", "test"),
            i,
            {"task": "t", "doc_id": i, "repeats": 1},
        )
        for i in range(2)
    ]
    out = lm.generate_until(reqs)
    ref = load_model(str(folder), device="cpu").generate(
        [Prompt(f"Is it red {i}?", img) for i in range(2)], max_new_tokens=4, batch_size=1
    )
    assert out == [r[0].split("\n")[0] for r in ref]
