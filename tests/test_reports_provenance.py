"""Reports say how they were made: every `benchmarks/...` script that README.md or a report under
reports/ cites exists, or the citing file records it as history (a paragraph naming the script
and "removed since", with the commit that had it); and reports/ holds reports, not run logs.

Science one-offs and job tooling left benchmarks/ (issue 14); a report they made keeps its
command as a record of how it was made, never as an instruction that no longer runs.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(r"benchmarks/([\w.+-]+\.(?:py|sh|txt))")

# Logs tolerated until the report that holds them is regenerated; an entry that no longer exists
# fails the test, so the list only shrinks (the GPU study's reports/gpu/logs/main.log left with
# issue 17's regeneration; empty now).
KNOWN_LOGS: set[str] = set()


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "reports").rglob("*.md"))]


def dangling(path: Path) -> list[str]:
    """The cited scripts of `path` that neither exist nor are recorded as removed in it."""
    text = path.read_text()
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    missing = []
    for name in sorted(set(CITED.findall(text))):
        if (ROOT / "benchmarks" / name).is_file():
            continue
        recorded = any(name in p and "removed since" in p for p in paragraphs)
        if not recorded:
            missing.append(name)
    return missing


def test_every_cited_benchmark_script_exists_or_is_recorded_as_removed() -> None:
    problems = {
        str(path.relative_to(ROOT)): names for path in documents() if (names := dangling(path))
    }
    assert not problems, (
        f"reports cite benchmark scripts that are gone: {problems} — restore the script, or say "
        "in that paragraph 'made with benchmarks/X at commit <sha>, removed since'"
    )


def test_the_check_sees_a_dangling_citation(tmp_path: Path) -> None:
    report = tmp_path / "r.md"
    report.write_text("Made by `python benchmarks/no_such_script.py --out x`.\n")
    assert dangling(report) == ["no_such_script.py"]
    report.write_text(
        "Made by `python benchmarks/no_such_script.py` at commit abc1234, removed since.\n"
    )
    assert dangling(report) == []
    report.write_text("Made by `python benchmarks/bench_startup.py`.\n")  # exists
    assert dangling(report) == []


def test_reports_hold_no_logs() -> None:
    logs = {str(p.relative_to(ROOT)) for p in (ROOT / "reports").rglob("*.log")}
    assert logs - KNOWN_LOGS == set(), (
        "run logs under reports/ — move the lines a reader needs (the command, the figures) "
        "into the report's .md and delete the log"
    )
    assert logs >= KNOWN_LOGS, f"{KNOWN_LOGS - logs} is gone: remove it from KNOWN_LOGS"
