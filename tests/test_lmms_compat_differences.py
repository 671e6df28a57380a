"""Where our verifier and lmms-eval 0.7.3 disagree, item by item, on the committed corpus of messy
answers; every kind of disagreement is documented in the task's README with one example.

The lmms-eval side is our `_lmms` rule, which `test_lmms_compat_parity.py` holds equal to
lmms-eval's own functions item by item, so this test runs without lmms-eval. The full list of
differing items is committed (`tests/fixtures/lmms_corpus/differences/<task>.jsonl`); after an
intended change of a verifier, regenerate it with
`UPDATE_GOLDEN=1 pytest tests/test_lmms_compat_differences.py`, review the diff, and print the
README rows with `python tests/support_lmms_corpus.py <task>`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from support_lmms_corpus import CORPUS, FAMILIES, corpus, differences

TASKS_DIR = Path(__file__).parents[1] / "tasks"
SECTION = "## Where our verifier and lmms-eval differ"
ROW = re.compile(r"^\| `([a-z_]+)` \| `(\".*\")` \| ([^|]+) \| (right|wrong) \| (right|wrong) \|$")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_differences_item_by_item(family: str) -> None:
    found = differences(family)
    path = CORPUS / "differences" / f"{family}.jsonl"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in found))
    committed = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert found == committed
    assert found, "the corpus should show where the scorings part"


def _readme_rows(family: str) -> list[tuple[str, str, str, str, str]]:
    text = (TASKS_DIR / family / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"tasks/{family}/README.md lacks '{SECTION}'"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            match = ROW.match(line)
            assert match, f"tasks/{family}/README.md: unreadable row {line!r}"
            form, example, target, ours, theirs = match.groups()
            rows.append((form, json.loads(example), target.strip(), ours, theirs))
    return rows


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_difference_class_is_in_the_readme_with_an_example(family: str) -> None:
    found = differences(family)
    classes = {(d["form"], d["verifier"], d["lmms_eval"]) for d in found}
    rows = _readme_rows(family)
    documented = {(form, ours, theirs) for form, _, _, ours, theirs in rows}
    assert classes - documented == set(), "undocumented differences"
    assert documented - classes == set(), "README rows that are no difference (any more)"
    assert len(rows) == len(documented), "one example per class"
    for form, example, target, ours, theirs in rows:
        prefix = example.endswith("…")
        stem = example[:-1] if prefix else example
        assert any(
            d["form"] == form
            and d["verifier"] == ours
            and d["lmms_eval"] == theirs
            and str(d["target"]) == target
            and (d["response"].startswith(stem) if prefix else d["response"] == stem)
            for d in found
        ), (form, example)


def test_corpus_files_are_the_builder_output() -> None:
    """The committed corpus is what build.py writes (so it can be regenerated and reviewed)."""
    import importlib.util
    import tempfile

    spec = importlib.util.spec_from_file_location("_corpus_build", CORPUS / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    with tempfile.TemporaryDirectory() as tmp:
        build.HERE = Path(tmp)
        for family in FAMILIES:
            getattr(build, family)()
            fresh = (Path(tmp) / f"{family}.jsonl").read_text(encoding="utf-8")
            assert fresh == (CORPUS / f"{family}.jsonl").read_text(encoding="utf-8"), family
    assert all(len(corpus(f)) >= 200 for f in FAMILIES)
