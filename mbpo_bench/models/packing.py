"""Shared-prefix packing: a prompt's answers scored in one sequence behind one copy of the prompt.

Why: GRPO scores the G sampled answers of each prompt twice a step (reference, policy) and
backpropagates through one of them. Laid out one row per answer, the prompt (image tokens and
question: ~600 of ~670 tokens at the LLaVA-7B shape with 64 new tokens) runs G times through
the vision tower and the language model. Packed, the answers of one prompt share one row:

    [prompt (P tokens), answer_1, answer_2, ..., answer_k, padding]

with an attention mask under which answer i sees the whole prompt and its own earlier tokens,
nothing else, and position ids that restart every answer at P (the prompt itself at 0..P-1).
Each answer token then has exactly the context it has in its own row, at the same relative
positions; rotary position embeddings depend on relative positions only, so its log-prob is the
same (tests check the log-probs and the LoRA gradients against one row per answer). The prompt's
hidden states receive the sum of their k answers' gradients, which is what the one-row layout
sums over its k copies of the prompt.

The first answer token is predicted at the prompt's last position, which all k answers share;
token t > 0 of answer i at its own column start_i + t - 1.

Cost and limits: a (L, L) mask per row instead of the causal kernel. SDPA accepts an arbitrary
boolean mask; eager attention adds a float mask (0 / dtype minimum); flash attention takes no
arbitrary mask, so packing refuses it. Padding positions attend to themselves only: a fully
masked row gives NaN in some CUDA kernels, and a NaN in a padding row's output would reach the
weight gradients through the backward.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PackedLayout:
    """Host tensors of one packed batch: R rows, each one prompt and its answers."""

    input_ids: torch.Tensor  # (R, L) long, right-padded
    allow: torch.Tensor  # (R, L, L) bool: query position attends key position
    positions: torch.Tensor  # (R, L) long: prompt 0..P-1, each answer from P; padding 0
    prompt_lengths: list[int]  # P of each row
    hidden_rows: torch.Tensor  # (N,) row of the hidden state that predicts scored token n
    hidden_cols: torch.Tensor  # (N,) its column; tokens flat, answer by answer (row-major)


def owners(keys: Sequence[Hashable]) -> tuple[list[int], list[int]]:
    """(index of each distinct key's first row, in order of appearance; packed row of each row)."""
    first: list[int] = []
    row: dict[Hashable, int] = {}
    row_of: list[int] = []
    for i, k in enumerate(keys):
        if k not in row:
            row[k] = len(first)
            first.append(i)
        row_of.append(row[k])
    return first, row_of


def pack(
    prompt_ids: Sequence[Sequence[int]],
    answer_ids: Sequence[Sequence[int]],
    row_of: Sequence[int],
    pad_id: int,
) -> PackedLayout:
    """The layout of `answer_ids[i]` packed behind `prompt_ids[row_of[i]]` (answers in order)."""
    import torch

    if len(answer_ids) != len(row_of):
        raise ValueError(f"{len(answer_ids)} answers but {len(row_of)} row assignments")
    if any(not a for a in answer_ids) or any(not p for p in prompt_ids):
        raise UserError("an empty prompt or answer cannot be packed — drop it")
    rows: list[list[int]] = [list(p) for p in prompt_ids]
    starts: list[int] = []
    for ans, r in zip(answer_ids, row_of, strict=True):
        starts.append(len(rows[r]))
        rows[r].extend(int(t) for t in ans)
    length = max(len(r) for r in rows)
    n_rows = len(rows)
    input_ids = torch.full((n_rows, length), pad_id, dtype=torch.long)
    positions = torch.zeros(n_rows, length, dtype=torch.long)
    allow = torch.zeros(n_rows, length, length, dtype=torch.bool)
    diagonal = torch.arange(length)
    allow[:, diagonal, diagonal] = True  # padding sees itself (no fully masked query)
    for r, (prompt, ids) in enumerate(zip(prompt_ids, rows, strict=True)):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        p = len(prompt)
        positions[r, :p] = torch.arange(p)
        allow[r, :p, :p] = torch.ones(p, p, dtype=torch.bool).tril()
    hidden_rows: list[int] = []
    hidden_cols: list[int] = []
    for ans, r, start in zip(answer_ids, row_of, starts, strict=True):
        n = len(ans)
        p = len(prompt_ids[r])
        positions[r, start : start + n] = p + torch.arange(n)
        allow[r, start : start + n, :p] = True
        allow[r, start : start + n, start : start + n] = torch.ones(n, n, dtype=torch.bool).tril()
        hidden_rows += [r] * n
        hidden_cols += [p - 1, *range(start, start + n - 1)]
    return PackedLayout(
        input_ids=input_ids,
        allow=allow,
        positions=positions,
        prompt_lengths=[len(p) for p in prompt_ids],
        hidden_rows=torch.tensor(hidden_rows),
        hidden_cols=torch.tensor(hidden_cols),
    )


def attention_mask(language_model: Any, allow: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The (R, 1, L, L) mask transformers passes to attention as is, in the convention of the
    language model's attention implementation (boolean for SDPA, additive for eager)."""
    import torch

    impl = str(getattr(language_model.config, "_attn_implementation", None) or "sdpa")
    if impl == "sdpa":
        return allow[:, None]
    if impl == "eager":
        blocked = torch.zeros(allow.shape, dtype=dtype).masked_fill(~allow, torch.finfo(dtype).min)
        return blocked[:, None]
    raise UserError(
        f"packed scoring needs SDPA or eager attention, not {impl!r} (flash attention takes no "
        "arbitrary mask) — load the model with attn_implementation='sdpa' or turn "
        "grpo.packed_scoring off"
    )
