"""Prefetching `choice_logprobs` inputs on a worker thread: same numbers, same order, same errors.

The helper is tested on plain callables (order, thread use, error surfacing, shutdown); the
adapter path on tiny LLaVA and Qwen2-VL models (fp32) against the sequential loop it replaced
(the helper monkeypatched by a plain loop) and against one-chunk calls.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from support_prompts import mixed_prompts, noise_image

from mbpo_bench.errors import UserError
from mbpo_bench.models import Prompt, build_tiny_model, load_model
from mbpo_bench.models import common as common_mod
from mbpo_bench.models.prefetch import THREAD_PREFIX, prefetched

torch.set_num_threads(1)
T = TypeVar("T")
R = TypeVar("R")
CHOICES = ["yes", "no"]


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def _sequential(
    items: Sequence[T], prepare: Callable[[T], R]
) -> Generator[tuple[T, R], None, None]:
    """The loop `choice_logprobs` ran before prefetching."""
    for item in items:
        yield item, prepare(item)


# ---- the helper ---------------------------------------------------------------------------------
def test_items_come_back_in_order_prepared_on_one_worker_thread() -> None:
    threads: list[str] = []

    def prepare(x: int) -> int:
        threads.append(threading.current_thread().name)
        return x * x

    assert list(prefetched(list(range(7)), prepare)) == [(i, i * i) for i in range(7)]
    assert len(set(threads)) == 1 and threads[0].startswith(THREAD_PREFIX)
    assert not _workers()


@pytest.mark.parametrize("n", [0, 1])
def test_zero_or_one_item_runs_on_the_calling_thread(n: int) -> None:
    threads: list[str] = []

    def prepare(x: int) -> int:
        threads.append(threading.current_thread().name)
        return x + 1

    assert list(prefetched(list(range(n)), prepare)) == [(i, i + 1) for i in range(n)]
    assert threads == [threading.current_thread().name] * n


def test_only_one_item_is_prepared_ahead() -> None:
    started: list[int] = []

    def prepare(x: int) -> int:
        started.append(x)
        return x

    it = prefetched(list(range(5)), prepare)
    with contextlib.closing(it):
        for item, _ in it:
            # item i is being used: at most item i+1 was started
            assert max(started) <= item + 1
    assert sorted(started) == list(range(5))


def test_a_preparation_error_surfaces_after_the_earlier_items() -> None:
    error = UserError("bad item 2 — fix it")

    def prepare(x: int) -> int:
        if x == 2:
            raise error
        return x

    seen = []
    with (
        pytest.raises(UserError) as info,
        contextlib.closing(prefetched([0, 1, 2, 3], prepare)) as it,
    ):
        for item, _ in it:
            seen.append(item)
    assert info.value is error
    assert seen == [0, 1]
    assert not _workers()


def test_an_error_in_the_loop_body_shuts_the_worker_down() -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        contextlib.closing(prefetched([0, 1, 2], lambda x: x)) as it,
    ):
        for _ in it:
            assert _workers()
            raise RuntimeError("boom")
    assert not _workers()


# ---- choice_logprobs on tiny models ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    cache: dict[str, Any] = {}

    def get(family: str) -> Any:
        if family not in cache:
            folder: Path = build_tiny_model(family, tmp_path_factory.mktemp(family), seed=1)
            cache[family] = load_model(folder, dtype="float32")
        return cache[family]

    return get


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_chunked_equals_sequential_and_one_chunk(
    tiny: Callable[[str], Any], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vlm, prompts = tiny(family), mixed_prompts()
    chunked = vlm.choice_logprobs(prompts, CHOICES, batch_size=2)
    assert not _workers()
    single = vlm.choice_logprobs(prompts, CHOICES, batch_size=len(prompts))
    # per-prompt rows, each computed alone: row order follows the prompts
    alone = torch.cat([vlm.choice_logprobs([p], CHOICES) for p in prompts])
    with monkeypatch.context() as m:
        m.setattr(common_mod, "prefetched", _sequential)
        before = vlm.choice_logprobs(prompts, CHOICES, batch_size=2)
    assert chunked.shape == (len(prompts), len(CHOICES))
    torch.testing.assert_close(chunked, before, atol=1e-6, rtol=0)
    torch.testing.assert_close(chunked, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked, alone, atol=1e-5, rtol=0)
    assert len({tuple(r) for r in chunked.tolist()}) == len(prompts)  # rows differ: order matters


def test_an_image_token_error_in_the_second_chunk_is_the_same_user_error(
    tiny: Callable[[str], Any],
) -> None:
    vlm = tiny("llava")
    # groups run image prompts first: the bad text-only prompt is the 2nd chunk at batch_size 1
    prompts = [
        Prompt(f"Is this {vlm.image_token} a cat?", None),
        Prompt("Is it round?", noise_image(0)),
    ]
    with pytest.raises(UserError, match="image tokens, expected 0"):
        vlm.choice_logprobs(prompts, CHOICES, batch_size=1)
    assert not _workers()
