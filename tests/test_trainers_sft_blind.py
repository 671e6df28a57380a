"""SFT's `blind_fraction`: which samples lose their image, and the bad-value error."""

from __future__ import annotations

from pathlib import Path

import pytest
from mbpo_bench.trainers.sft import SFTConfig, _is_blind, run_sft

from mbpo_bench.errors import UserError


def test_blind_draws_are_stable_and_near_the_fraction() -> None:
    draws = [_is_blind(0, step, j, 0.1) for step in range(50) for j in range(200)]
    assert 0.09 < sum(draws) / len(draws) < 0.11
    assert draws == [_is_blind(0, step, j, 0.1) for step in range(50) for j in range(200)]
    assert draws != [_is_blind(1, step, j, 0.1) for step in range(50) for j in range(200)]
    assert not any(_is_blind(0, 3, j, 0.0) for j in range(100))
    assert all(_is_blind(0, 3, j, 1.0) for j in range(100))


def test_blind_fraction_out_of_range_is_refused(tmp_path: Path) -> None:
    config = SFTConfig(model=str(tmp_path / "unused"), blind_fraction=1.5, limit=4)
    with pytest.raises(UserError, match="blind_fraction must be in"):
        run_sft(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
