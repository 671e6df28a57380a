"""The family table (models/families.py FAMILIES) is the one place to register a model family: a
throwaway family added as one row is listed by `models list`, built by `models init --family`
and loaded by `load_model`, with no other file touched."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mbpo_bench.cli.main import main
from mbpo_bench.models import families


@pytest.fixture
def toy_family(monkeypatch: pytest.MonkeyPatch) -> str:
    """llava_siglip_qwen2's row under a new name and summary."""
    row = dataclasses.replace(
        families.FAMILIES["llava_siglip_qwen2"], summary="a throwaway family for the test"
    )
    monkeypatch.setitem(families.FAMILIES, "toy_family", row)
    return "toy_family"


def test_a_registered_family_is_listed_built_and_loaded(
    toy_family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    line = next(row for row in listed.splitlines() if toy_family in row)
    assert "a throwaway family for the test" in line
    # counted on the meta device like the built-in rows (the table's llava_siglip_qwen2 builders)
    assert "3.1M" in line
    out = tmp_path / "toy"
    assert main(["models", "init", "--family", toy_family, "--out", str(out)]) == 0
    from mbpo_bench.models import load_model

    vlm = load_model(out, device="cpu")
    assert type(vlm).__name__ == "LlavaAdapter"  # the row's adapter (loads as model_type llava)


def test_every_row_names_importable_builders_and_adapter() -> None:
    for name, row in families.FAMILIES.items():
        for ref in (row.tiny_config, row.tiny_processor, row.image_processor, row.adapter):
            assert callable(families.FamilySpec.load(ref)), (name, ref)
        for ref in (row.processor_from_files, row.processor_check):
            assert ref is None or callable(families.FamilySpec.load(ref)), (name, ref)
        assert row.loads_as in families.LOADABLE_MODEL_TYPES and row.protocols, name
    assert families.LOADABLE_MODEL_TYPES == ("llava", "qwen2_vl", "qwen2_5_vl")
