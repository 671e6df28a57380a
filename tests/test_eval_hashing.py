"""Cheap content hashes of model folders."""

from __future__ import annotations

from pathlib import Path

from mbpo_bench.evaluation.hashing import content_hash


def test_hash_follows_config_and_weight_sizes(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "README.md").write_text("ignored")
    first = content_hash(tmp_path)
    assert first is not None and first.startswith("sha256:") and content_hash(tmp_path) == first
    (tmp_path / "README.md").write_text("changed, still ignored")
    assert content_hash(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)
    second = content_hash(tmp_path)
    assert second != first
    (tmp_path / "config.json").write_text('{"a": 2}')
    assert content_hash(tmp_path) not in (first, second)


def test_no_hash_for_missing_or_hub_ids(tmp_path: Path) -> None:
    assert content_hash(None) is None
    assert content_hash(tmp_path / "missing") is None
    assert content_hash("org/model") is None
