"""Hybrid offline-online batches for MBPO's GRPO stage, as plain data.

A batch is a list of `Group`s. An online group holds G sampled responses with verifier rewards.
An offline group (method.md) holds the mined pair, chosen (reward 2 = correct + format) and
rejected (reward 0), optionally plus online samples drawn for the same prompt. `plan_mix` decides
how many of a step's groups are offline from the configured ratio and what the pool can give;
`flatten` turns groups into the flat (responses, rewards, group ids) the advantage and loss code
needs. With an empty offline pool every group is online, so MBPO reduces exactly to GRPO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from mbpo_bench.errors import UserError

if TYPE_CHECKING:
    from mbpo_bench.trainers.data import PreferencePair

    from mbpo_bench.data.items import TaskItem

SampleSource = Literal["online", "chosen", "rejected"]
GroupKind = Literal["online", "offline"]


@dataclass(frozen=True)
class Sample:
    response: str
    reward: float
    correct: bool | None = None
    source: SampleSource = "online"
    # the sampled token ids (online samples): trained on exactly as sampled; None (the mined
    # pair's texts) = the text's tokens + EOS
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Group:
    """Responses to one prompt; `prompt` indexes the trainer's online items or offline pairs."""

    prompt: int
    kind: GroupKind
    samples: tuple[Sample, ...]

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.samples]


def online_group(
    prompt: int,
    responses: Sequence[str],
    rewards: Sequence[float],
    correct: Sequence[bool | None] | None = None,
    token_ids: Sequence[tuple[int, ...] | None] | None = None,
) -> Group:
    flags = list(correct) if correct is not None else [None] * len(responses)
    ids = list(token_ids) if token_ids is not None else [None] * len(responses)
    samples = tuple(
        Sample(r, float(w), c, "online", t)
        for r, w, c, t in zip(responses, rewards, flags, ids, strict=True)
    )
    return Group(prompt, "online", samples)


def offline_group(
    prompt: int,
    chosen: str,
    rejected: str,
    *,
    chosen_reward: float = 2.0,
    rejected_reward: float = 0.0,
    extra: Sequence[Sample] = (),
) -> Group:
    """{chosen: chosen_reward, rejected: rejected_reward} plus optional online samples."""
    pair = (
        Sample(chosen, chosen_reward, True, "chosen"),
        Sample(rejected, rejected_reward, False, "rejected"),
    )
    return Group(prompt, "offline", pair + tuple(extra))


def plan_mix(n_groups: int, offline_ratio: float, n_offline_available: int) -> tuple[int, int]:
    """(offline, online) group counts for a step of `n_groups` prompts.

    offline = round(n_groups * ratio), capped by the pool; an empty pool gives all-online.
    """
    if not 0.0 <= offline_ratio <= 1.0:
        raise ValueError(f"offline ratio must be in [0, 1], got {offline_ratio}")
    n_offline = round(n_groups * offline_ratio) if n_offline_available > 0 else 0
    n_offline = min(n_offline, n_groups)
    return n_offline, n_groups - n_offline


@dataclass(frozen=True)
class FlatBatch:
    responses: list[str]
    token_ids: list[tuple[int, ...] | None]  # sampled ids where the response was sampled
    rewards: torch.Tensor  # (N,) float32
    group_ids: torch.Tensor  # (N,) int64, index into the groups list
    sources: list[SampleSource]
    correct: list[bool | None]


def flatten(groups: Sequence[Group]) -> FlatBatch:
    responses: list[str] = []
    token_ids: list[tuple[int, ...] | None] = []
    rewards: list[float] = []
    ids: list[int] = []
    sources: list[SampleSource] = []
    correct: list[bool | None] = []
    for gi, group in enumerate(groups):
        for s in group.samples:
            responses.append(s.response)
            token_ids.append(s.token_ids)
            rewards.append(s.reward)
            ids.append(gi)
            sources.append(s.source)
            correct.append(s.correct)
    return FlatBatch(
        responses=responses,
        token_ids=token_ids,
        rewards=torch.tensor(rewards, dtype=torch.float32),
        group_ids=torch.tensor(ids, dtype=torch.long),
        sources=sources,
        correct=correct,
    )


def has_variance(group: Group, atol: float = 1e-6) -> bool:
    rewards = group.rewards
    return len(rewards) > 1 and max(rewards) - min(rewards) > atol


@dataclass
class HybridSettings:
    """MBPO's batch mix (method.md); rewards of the offline pair are correct+format = 2 / 0."""

    offline_ratio: float = 0.5  # fraction of a step's groups that are offline (mined) pairs
    chosen_reward: float = 2.0
    rejected_reward: float = 0.0
    offline_extra_samples: int = 0  # online samples added to each offline group (0 = pair only)
    # online prompts: "all" task items (default), or "mined": the items of the mined pairs only,
    # the prompts PGD mining flagged (ours; field notes: online groups from a prior-dominated
    # pool carry almost no signal)
    online_pool: Literal["all", "mined"] = "all"
    # ours, the twin-pair variant (trainers/twins.py; embedded benchmark v3): mine from items
    # that have a prior twin and train each mined pair with its twin in the same step (half the
    # offline groups are twins, so the groups per step stay `offline_ratio` x batch), plus an
    # image-conditional term with the twin as the wrong image
    twins: bool = False
    twin_cond_weight: float = 1.0
    twin_cond_beta: float = 0.1


def online_items(
    items: list[TaskItem], pairs: Sequence[PreferencePair], pool: str
) -> list[TaskItem]:
    """The online prompts: every task item ("all"), or the items of the mined pairs ("mined";
    every task item when mining kept none, which the caller logs: a run is not lost to it)."""
    if pool not in ("all", "mined"):
        raise UserError(f"unknown hybrid.online_pool '{pool}' — choose one of: all, mined")
    if pool == "all" or not pairs:
        return items
    return [pair.as_item() for pair in pairs]
