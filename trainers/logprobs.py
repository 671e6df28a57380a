"""Token log-probabilities from logits, and masked reductions over them.

Why a module of its own: every trainer turns logits into per-token log-probs of given tokens, and
the memory-hungry way (`log_softmax` over the whole vocabulary, then `gather`) keeps a (B, T, V)
tensor alive for backward. `token_logprobs` gathers the chosen logit and subtracts `logsumexp`
instead, row by row in chunks, so the peak extra memory is one chunk of the vocabulary
projection; the result is identical to `log_softmax(...).gather(...)`.

Masks are boolean (B, T); positions where the mask is false are set to 0 in every output so a
padded position can never leak a NaN or a large number into a sum.
"""

from __future__ import annotations

from typing import Literal

import torch

Reduce = Literal["sum", "mean"]


def token_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    chunk_rows: int = 1024,
) -> torch.Tensor:
    """log p(tokens[b, t]) under logits[b, t, :] as float32 (B, T); 0 where `mask` is false.

    `logits` (B, T, V) must already be aligned with `tokens` (B, T): for a causal LM pass
    `logits[:, :-1]` and `input_ids[:, 1:]`, see `shift_for_causal`.
    """
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(tokens.shape)}")
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_tokens = tokens.reshape(-1)
    parts = []
    for start in range(0, flat_logits.shape[0], chunk_rows):
        rows = flat_logits[start : start + chunk_rows].float()
        picked = rows.gather(-1, flat_tokens[start : start + chunk_rows, None]).squeeze(-1)
        parts.append(picked - torch.logsumexp(rows, dim=-1))
    out = torch.cat(parts).reshape(tokens.shape) if parts else flat_logits.new_zeros(tokens.shape)
    if mask is not None:
        out = out.masked_fill(~mask.bool(), 0.0)
    return out


def shift_for_causal(
    logits: torch.Tensor, input_ids: torch.Tensor, target_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align a causal LM's outputs with its targets: position t predicts token t+1.

    `target_mask[b, t]` marks the tokens of `input_ids` to score (the answer); returns
    (logits[:, :-1], input_ids[:, 1:], target_mask[:, 1:]).
    """
    return logits[:, :-1], input_ids[:, 1:], target_mask[:, 1:].bool()


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = -1) -> torch.Tensor:
    """Mean over the masked positions (per row for `dim=-1`, over everything for `dim=None`).

    A row with no valid position gives 0, not NaN.
    """
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def sequence_logprob(
    logps: torch.Tensor, mask: torch.Tensor, reduce: Reduce = "sum"
) -> torch.Tensor:
    """One number per sequence: the sum (a proper log-likelihood) or the per-token mean."""
    if reduce == "sum":
        return masked_sum(logps, mask.to(logps.dtype))
    if reduce == "mean":
        return masked_mean(logps, mask)
    raise ValueError(f"unknown reduce {reduce!r}; expected 'sum' or 'mean'")
