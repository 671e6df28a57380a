"""Regional compilation (`models/compile.py`): same numbers, same module tree, never in generate.

Fast tests use backend "eager" (dynamo traces every layer, inductor is skipped), on tiny LLaVA
and Qwen2-VL models with a LoRA adapter whose B matrices are random (peft starts them at zero,
which would hide a wrong adapter path). The slow test runs inductor. CPU timing means nothing
here; the H200 benchmarks measure the speed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from support_prompts import mixed_prompts, noise_image, with_random_adapter

from mbpo_bench.errors import UserError
from mbpo_bench.models import build_tiny_model
from mbpo_bench.models import compile as compile_mod
from mbpo_bench.models.compile import compiled_layers, decoder_layers
from mbpo_bench.models.lora import LoraSettings

torch.set_num_threads(1)
FIXTURES = Path(__file__).parent / "fixtures"
ANSWERS = ["yes", "two stars", "red", "no"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    """family -> a tiny model with a random LoRA adapter (built once per module)."""
    cache: dict[str, Any] = {}

    def get(family: str) -> Any:
        if family not in cache:
            folder = build_tiny_model(family, tmp_path_factory.mktemp(family), seed=1)
            cache[family] = with_random_adapter(folder)
        return cache[family]

    return get


def _layers(vlm: Any) -> list[torch.nn.Module]:
    return [layer for group in decoder_layers(vlm.model) for layer in group]


def _compiled(vlm: Any) -> list[bool]:
    return ["forward" in vars(layer) for layer in _layers(vlm)]


def _scores_and_grads(vlm: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    vlm.model.zero_grad(set_to_none=True)
    lp = vlm.answer_logprobs(mixed_prompts(4), ANSWERS, requires_grad=True)
    (lp.logps * lp.mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in vlm.model.named_parameters() if p.requires_grad}
    vlm.model.zero_grad(set_to_none=True)
    return lp.logps.detach(), grads


def _assert_close(a: tuple[torch.Tensor, dict[str, torch.Tensor]], b: Any, atol: float) -> None:
    torch.testing.assert_close(a[0], b[0], atol=atol, rtol=0)
    assert a[1].keys() == b[1].keys() and any("lora_" in k for k in a[1])
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=atol, rtol=0, msg=name)


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_layers_compile_inside_and_the_module_tree_is_untouched(
    tiny: Callable[[str], Any], family: str
) -> None:
    vlm = tiny(family)
    kinds = [type(group[0]).__name__ for group in decoder_layers(vlm.model)]
    # LLaVA: the LM and the CLIP tower; Qwen2-VL's vision blocks stay eager (graph breaks)
    assert kinds == (["LlamaDecoderLayer", "CLIPEncoderLayer"] if family == "llava" else
                     ["Qwen2VLDecoderLayer"])  # fmt: skip
    assert len(decoder_layers(vlm.model, vision=False)) == 1
    params = {n: id(p) for n, p in vlm.model.named_parameters()}
    keys = list(vlm.model.state_dict())
    assert not any(_compiled(vlm))
    with compiled_layers(vlm, backend="eager"):
        assert all(_compiled(vlm))
        assert {n: id(p) for n, p in vlm.model.named_parameters()} == params
        assert list(vlm.model.state_dict()) == keys
    assert not any(_compiled(vlm))
    with compiled_layers(vlm, enabled=False, backend="eager"):
        assert not any(_compiled(vlm))


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_scores_and_lora_gradients_equal_eager_and_reentry_reuses_the_graphs(
    tiny: Callable[[str], Any], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vlm = tiny(family)
    calls: list[str] = []
    real = compile_mod._compiled_forward

    def spy(cls: type, backend: str) -> Callable[..., Any]:
        fn = real(cls, backend)

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(cls.__name__)
            return fn(*args, **kwargs)

        return counted

    monkeypatch.setattr(compile_mod, "_compiled_forward", spy)
    eager = _scores_and_grads(vlm)
    with compiled_layers(vlm, backend="eager"):
        compiled = _scores_and_grads(vlm)
    assert len(calls) >= len(_layers(vlm))  # every layer went through the compiled function
    _assert_close(eager, compiled, atol=1e-5)
    graphs = _graphs()
    with compiled_layers(vlm, backend="eager"):
        again = _scores_and_grads(vlm)
    assert _graphs() == graphs
    _assert_close(eager, again, atol=1e-5)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_generate_is_unchanged_inside_and_after_the_context(
    tiny: Callable[[str], Any], family: str
) -> None:
    vlm = tiny(family)
    before = vlm.generate(mixed_prompts(4), max_new_tokens=4)
    choices = vlm.choice_logprobs(mixed_prompts(4), ["yes", "no"])
    with compiled_layers(vlm, backend="eager"):
        # a layer given a KV cache runs its eager forward: greedy decoding is the same
        assert vlm.generate(mixed_prompts(4), max_new_tokens=4) == before
        torch.testing.assert_close(
            vlm.choice_logprobs(mixed_prompts(4), ["yes", "no"]), choices, atol=1e-5, rtol=0
        )
    assert vlm.generate(mixed_prompts(4), max_new_tokens=4) == before


def test_the_originals_come_back_when_the_block_raises(tiny: Callable[[str], Any]) -> None:
    vlm = tiny("llava")
    with pytest.raises(RuntimeError, match="boom"), compiled_layers(vlm, backend="eager"):
        assert all(_compiled(vlm))
        raise RuntimeError("boom")
    assert not any(_compiled(vlm))


def test_nested_use_is_a_no_op_and_a_foreign_forward_is_refused(
    tiny: Callable[[str], Any],
) -> None:
    vlm = tiny("llava")
    with compiled_layers(vlm, backend="eager"):
        with compiled_layers(vlm, backend="eager"):
            assert all(_compiled(vlm))
        assert all(_compiled(vlm))  # the inner exit left the outer's layers alone
    assert not any(_compiled(vlm))
    last = _layers(vlm)[-1]
    last.forward = lambda *a, **k: None  # type: ignore[method-assign]
    try:
        with pytest.raises(UserError, match="own forward"), compiled_layers(vlm, backend="eager"):
            pass
        assert _compiled(vlm) == [False] * (len(_layers(vlm)) - 1) + [True]
    finally:
        del last.forward


def _spy(log: list[tuple[str, Any]], active: list[bool]) -> Callable[..., Any]:
    """A stand-in for `compiled_layers` that logs its entry and marks the block as active."""

    @contextlib.contextmanager
    def spy(vlm: Any, *, enabled: bool = True, **kw: Any) -> Iterator[None]:
        log.append(("enter", enabled))
        active.append(enabled)
        try:
            yield
        finally:
            active.pop()

    return spy


def test_runtime_compile_layers_reaches_the_update_but_not_the_rollout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mbpo_bench.trainers import grpo
    from mbpo_bench.trainers.loop import OptimConfig
    from mbpo_bench.trainers.policy import load_policy

    from mbpo_bench.config import dump_yaml, load_config
    from mbpo_bench.data.items import TaskItem

    assert grpo.GRPOConfig().runtime.compile_layers is False
    cfg = load_config(grpo.GRPOConfig, None, ["runtime.compile_layers=true"])
    assert cfg.runtime.compile_layers is True
    (tmp_path / "c.yaml").write_text(dump_yaml(cfg))
    assert load_config(grpo.GRPOConfig, tmp_path / "c.yaml") == cfg

    folder = build_tiny_model("llava", tmp_path / "m", seed=1)
    policy = load_policy(str(folder), lora=LoraSettings(r=4, alpha=8), full_finetune=False,
                         runtime=cfg.runtime, need_reference=True)  # fmt: skip
    log: list[tuple[str, Any]] = []
    active: list[bool] = []
    real_generate = policy.vlm.generate_completions  # the rollout's entry (keeps sampled ids)

    def generate(*args: Any, **kwargs: Any) -> Any:
        log.append(("generate", any(active)))
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(policy.vlm, "generate_completions", generate)
    real_scores = policy.vlm.prepared_logprobs  # reference and policy score one prepared batch

    def prepared_logprobs(*args: Any, **kwargs: Any) -> Any:
        log.append(("score", any(active)))
        return real_scores(*args, **kwargs)

    monkeypatch.setattr(policy.vlm, "prepared_logprobs", prepared_logprobs)
    noise_image(3).save(tmp_path / "img.png")
    item = TaskItem("t", "0", "Is it red? Answer yes or no.", "yes", "yesno", tmp_path / "img.png")
    s = grpo.GRPOSettings(num_generations=2, max_new_tokens=2)
    monkeypatch.setattr(compile_mod, "compiled_layers", _spy(log, active))
    step, _ = grpo.make_step_fn(policy, [item], [], s, OptimConfig(batch_size=1), seed=0)
    result = step(0)
    assert result.samples == 2
    # the rollout ran eager; the reference and policy scoring passes inside the context
    assert log == [("generate", False), ("enter", True), ("score", True), ("score", True)]


def test_eval_compile_is_recorded_and_changes_no_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mbpo_bench.cli.eval_cmd import build_config
    from mbpo_bench.cli.main import main
    from mbpo_bench.models.common import AdapterBase

    assert build_config(model="m", tasks="t", output=tmp_path).runtime.compile_layers is False
    assert build_config(model="m", tasks="t", output=tmp_path, compile=True).runtime.compile_layers
    (tmp_path / "embedded.yaml").write_text("n_train: 8\nn_eval_per_cell: 4\n")
    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(tmp_path / "embedded.yaml"))
    monkeypatch.setenv("MBPO_BENCH_DATA", str(FIXTURES))
    entered: list[bool] = []
    real = compile_mod.compiled_layers

    def eager_backend(vlm: Any, *, enabled: bool = True, **kw: Any) -> Any:
        entered.append(enabled)
        return real(vlm, enabled=enabled, backend="eager")

    monkeypatch.setattr(compile_mod, "compiled_layers", eager_backend)
    generated_compiled: list[bool] = []
    real_generate = AdapterBase.generate

    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        generated_compiled.append(any(_compiled(self)))
        return real_generate(self, *args, **kwargs)

    monkeypatch.setattr(AdapterBase, "generate", generate)
    model = build_tiny_model("llava", tmp_path / "m", seed=0)
    rows = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / f"run{len(flag)}"
        code = main(["eval", "--model", str(model), "--output", str(out), "--tasks",
                     "mbpo_embedded_existence,mbpo_embedded_count", "--limit", "3",
                     "--probes", "image,iig", "--answer-mode", "choice", "--max-new-tokens", "1",
                     "--no-progress", "--set", "bootstrap.n_resamples=20", *flag])  # fmt: skip
        assert code == 0
        results = json.loads((out / "results.json").read_text())
        assert results["config"]["runtime"]["compile_layers"] is bool(flag)
        lines = (out / "samples.jsonl").read_text().splitlines()
        rows[bool(flag)] = {(r["task"], r["probe"], r["doc_id"]): r for r in map(json.loads, lines)}
    # with --compile generation runs inside the context too (the vision tower compiles; the LM
    # layers, given a KV cache, run eager), with the same responses; one generate call a run
    assert True in entered and generated_compiled == [False, True]
    assert rows[True].keys() == rows[False].keys()
    for key, a in rows[False].items():
        b = rows[True][key]
        assert a.get("response") == b.get("response"), key
        for field in ("logp_image", "logp_null"):
            if field in a:
                assert b[field] == pytest.approx(a[field], abs=1e-5)
        for form, value in (a.get("choice_logprobs") or {}).items():
            assert b["choice_logprobs"][form] == pytest.approx(value, abs=1e-5)


@pytest.mark.slow
def test_inductor_matches_eager_and_reentry_does_not_recompile(
    tiny: Callable[[str], Any],
) -> None:
    vlm = tiny("llava")
    eager = _scores_and_grads(vlm)
    texts = vlm.generate(mixed_prompts(4), max_new_tokens=4)
    with compiled_layers(vlm):
        _assert_close(eager, _scores_and_grads(vlm), atol=1e-4)
    graphs = _graphs()
    with compiled_layers(vlm):
        _assert_close(eager, _scores_and_grads(vlm), atol=1e-4)
    assert _graphs() == graphs
    assert vlm.generate(mixed_prompts(4), max_new_tokens=4) == texts


def test_compile_with_the_lmms_eval_backend_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mbpo_bench.cli.main import main

    out = tmp_path / "o"
    code = main(["eval", "--model", "m", "--tasks", "embedded", "--output", str(out),
                 "--compile", "--backend", "lmms-eval", "--probes", "image"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "--compile" in err and "native backend" in err
    assert not out.exists()


def test_qwen_vision_mlps_compile_for_eval_without_graph_breaks(tiny: Callable[[str], Any]) -> None:
    """`qwen_vision=True` (evaluation) adds each Qwen vision block's MLP; the blocks' attention
    (`cu_seqlens.tolist()`) stays eager, so the compiled MLPs trace without a graph break, and
    choice scores on images of two sizes (packed patches) are unchanged."""
    from PIL import Image
    from torch._dynamo.utils import counters

    from mbpo_bench.models import Prompt

    vlm = tiny("qwen2_vl")
    groups = decoder_layers(vlm.model, qwen_vision=True)
    assert [type(g[0]).__name__ for g in groups] == ["Qwen2VLDecoderLayer", "VisionMlp"]
    assert len(groups[1]) == len(vlm.hf_model.model.visual.blocks)
    assert len(decoder_layers(vlm.model, vision=False, qwen_vision=True)) == 1
    images = [noise_image(1).resize((64, 48)), noise_image(2).resize((32, 96))]
    prompts = [Prompt("Is it red?", img) for img in images]
    assert all(isinstance(p.image, Image.Image) for p in prompts)
    eager = vlm.choice_logprobs(prompts, [" yes", " no"])
    counters.clear()
    with compiled_layers(vlm, backend="eager", qwen_vision=True):
        assert all(vars(m).get("forward") is not None for m in groups[1])
        compiled = vlm.choice_logprobs(prompts, [" yes", " no"])
    assert sum(counters["graph_break"].values()) == 0
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    assert all(vars(m).get("forward") is None for m in groups[1])


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_one_extra_pad_token_keeps_the_scores_and_spares_the_mask_free_graphs(
    tiny: Callable[[str], Any], family: str
) -> None:
    """GRPO's compiled passes left-pad every row by one more token (`extra_pad`): a micro-batch
    whose rows all have one length then still carries a padding mask and reuses the graphs of a
    padded one (without it, transformers drops the mask and dynamo compiles a mask-free variant,
    what made step 1 of the H200 benchmark recompile); the log-probs stay those of no padding."""
    from mbpo_bench.models.protocol import Prompt

    vlm = tiny(family)
    prompts = [Prompt("What is in the image?", noise_image(5))] * 2
    torch._dynamo.reset()  # this test's own graphs only
    with torch.no_grad(), compiled_layers(vlm, backend="eager"):
        vlm.prepared_logprobs(vlm.prepare_answers(prompts, ["yes", "two red stars"], extra_pad=1))
        graphs = _graphs()
        same = vlm.prepared_logprobs(vlm.prepare_answers(prompts, ["no", "no"], extra_pad=1))
        assert _graphs() == graphs
        vlm.prepared_logprobs(vlm.prepare_answers(prompts, ["no", "no"]))  # no padding at all
        assert _graphs() > graphs  # the variant the extra token spares
    eager = vlm.answer_logprobs(prompts, ["no", "no"])
    torch.testing.assert_close(same.logps, eager.logps, atol=1e-5, rtol=0)
    assert torch.equal(same.mask, eager.mask)


def test_compile_cache_setting_points_inductor_at_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runtime.compile_cache: a folder is created and becomes inductor's cache folder (read by
    inductor itself), "auto" keeps a folder the user set and otherwise names the user cache,
    "off" leaves torch alone; an unusable folder is a one-line error."""
    from mbpo_bench.trainers.loop import RuntimeConfig, setup_runtime
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from mbpo_bench.models.compile import CACHE_ENV, default_compile_cache, use_compile_cache

    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert use_compile_cache("off") is None and CACHE_ENV not in __import__("os").environ
    assert use_compile_cache("auto") == tmp_path / "xdg" / "mbpo-bench" / "torch-compile"
    assert default_compile_cache() == tmp_path / "xdg" / "mbpo-bench" / "torch-compile"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert use_compile_cache("auto") == tmp_path / "mine"
    setup_runtime(RuntimeConfig(device="cpu", compile_cache=str(tmp_path / "runs" / "cc")))
    assert cache_dir() == str(tmp_path / "runs" / "cc") and (tmp_path / "runs" / "cc").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"runtime\.compile_cache folder .* — give a writable"):
        use_compile_cache(str(tmp_path / "file" / "sub"))


def test_lora_training_passes_leave_the_frozen_vision_tower_eager(
    tiny: Callable[[str], Any],
) -> None:
    """Under LoRA `Policy.compiled()` compiles the language model's layers only (the frozen
    vision tower's graphs would cost first-step compile time for a small share of the step);
    a fully fine-tuned policy compiles the vision tower too."""
    from mbpo_bench.trainers.policy import Policy

    vlm = tiny("llava")
    lm, tower = decoder_layers(vlm.model)
    for lora, vision in ((True, False), (False, True)):
        policy = Policy(vlm=vlm, lora=lora, base="tiny", compile_layers=True)
        assert policy.compile_vision is vision
        with policy.compiled():  # nothing runs: the forwards are only bound
            assert all("forward" in vars(layer) for layer in lm)
            assert all(("forward" in vars(layer)) is vision for layer in tower)
        assert not any(_compiled(vlm))


def test_floats_are_specialised_only_inside_the_context(tiny: Callable[[str], Any]) -> None:
    """Python floats become constants while compiling (`specialize_float`: no restarted
    analysis, see the next test); outside the context dynamo's setting is the user's."""
    cfg = torch._dynamo.config
    before = cfg.specialize_float
    assert before is False  # torch's default: the test below would show the restart
    with compiled_layers(tiny("llava"), backend="eager"):
        assert cfg.specialize_float is True
    assert cfg.specialize_float is before


@pytest.mark.slow
def test_training_graphs_compile_without_a_restarted_analysis(tiny: Callable[[str], Any]) -> None:
    """A forward+backward through the compiled layers traces each joint graph once: with the
    floats symbolic, AOTAutograd traced one more graph than it kept (dynamo restarted the frame
    after `_tensorify_python_scalars` gave up), in every process, warm cache or not."""
    from torch._dynamo.utils import counters

    vlm = tiny("llava")
    eager = _scores_and_grads(vlm)
    aot = counters["aot_autograd"]
    total, ok = aot["total"], aot["ok"]
    with compiled_layers(vlm, backend="aot_eager", vision=False):
        _assert_close(eager, _scores_and_grads(vlm), atol=1e-5)
    assert aot["ok"] - ok > 0
    assert aot["total"] - total == aot["ok"] - ok


@pytest.mark.parametrize("hooked", [True, False])
def test_lora_training_passes_share_one_graph_for_every_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooked: bool
) -> None:
    """Under `Policy.compiled()` the frozen embeddings' output requires grad, so the first
    decoder layer's input matches the others' and one training graph serves every layer (the
    first layer compiled a second one before); the LoRA gradients are the eager path's."""
    import functools

    from mbpo_bench.trainers import policy as policy_mod
    from mbpo_bench.trainers.loop import RuntimeConfig
    from mbpo_bench.trainers.policy import load_policy

    folder = build_tiny_model("llava", tmp_path / "m", seed=1)
    policy = load_policy(str(folder), lora=LoraSettings(r=4, alpha=8), full_finetune=False,
                         runtime=RuntimeConfig(device="cpu"), need_reference=False)  # fmt: skip
    with torch.no_grad():  # B != 0, so the adapter's gradient path is not trivially zero
        for name, p in policy.vlm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    eager = _scores_and_grads(policy.vlm)
    monkeypatch.setattr(compile_mod, "compiled_layers",
                        functools.partial(compiled_layers, backend="eager"))  # fmt: skip
    if not hooked:  # the old behaviour, to show what the hook saves
        monkeypatch.setattr(policy_mod, "_embeddings_require_grad",
                            lambda vlm: contextlib.nullcontext())  # fmt: skip
    torch._dynamo.reset()
    policy.compile_layers = True
    graphs = _graphs()
    with policy.compiled():
        _assert_close(eager, _scores_and_grads(policy.vlm), atol=0)
    # the LM layers (vision stays eager under LoRA); mixed prompts: with and without images
    assert _graphs() - graphs == (1 if hooked else 2)
    emb = policy.vlm.hf_model.get_input_embeddings()
    assert not emb._forward_hooks  # removed on exit
