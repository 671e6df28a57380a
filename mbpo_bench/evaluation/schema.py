"""The typed, versioned schema of an evaluation's `results.json`.

Reports, comparisons and plots read ONLY this file (and the per-sample `samples.jsonl` beside it
for paired comparisons), so it is explicit about everything a reader needs to trust a number:

- per task and probe, every metric as `{value, n, ci_low, ci_high, higher_is_better}`
  (bootstrap percentile CI; `value` is `null` where undefined, e.g. precision with no "yes");
- per task, the derived modality-balance metrics in `balance` (see `BALANCE_METRICS`);
- task version, prompt template and generation settings, so two results are comparable only
  when these agree;
- model and adapter ids with cheap content hashes (`mbpo_bench.evaluation.hashing`), package
  versions, git sha, wall time and samples/s.

Layout (`Results`):
    schema_version, model{...}, probes[...], bootstrap{...}, tasks{name: TaskResult},
    packages{...}, git_sha, python, device, wall_time_s, compute_time_s, samples_per_s,
    n_samples, items_skipped, config{...}, answer_mode, answered{...}, fallbacks{...}
    TaskResult: task, version, prompt_template, verifier, generation{...}, n_items,
                items_skipped[{doc_id, reason}],
                probes{probe: {probe, n, metrics{...}, answered{...}}}, balance{name: Metric}

`headline` (per task) names the metric the paper table reports and multimodal gain / leakage
use; `judge` (per judged task) records the judge, the rubric, the prompt's hash and source, the
answers judged, the judge errors (with the raw reply, counted apart, never scored) and the
tokens and seconds spent; the run's `judge` sums the costs over tasks.

`answer_mode` is the run's ("generate" or "choice", see `choices.py`); `answered` counts the
generation probes' samples by how they were answered ({"choice": n, "generate": m}) per probe and
for the run; `fallbacks` counts, for the run, why samples of a choice-mode run were generated.

`SCHEMA_VERSION` increases on any incompatible change; `Results.from_json` refuses other versions
and reports the first problem as one line naming its path (`tasks.pope.probes.image.metrics...`).
It reads through the package's one typed loader (`mbpo_bench.config.from_dict`, strict: exact
types, every required field present), the one that reads configs.
Fields added compatibly (with a default, read as that default from older files) keep the version:
`answer_mode`, `answered` and `fallbacks` (absent: "generate", counts unknown = {}).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbpo_bench.config import from_dict
from mbpo_bench.errors import UserError

SCHEMA_VERSION = 1

# name -> higher_is_better (None: neither direction is better, the ideal is task-dependent)
BALANCE_METRICS: dict[str, bool | None] = {
    "visual_reliance_blind": True,  # acc(image) - acc(blind), paired over the same items
    "visual_reliance_mismatched": True,  # acc(image) - acc(another item's image)
    "visual_reliance_noise": True,  # acc(image) - acc(noise image)
    "predicted_yes_ratio": None,  # share of PREDICTED "yes" with the image (yes/no tasks)
    "counter_prior_gap": False,  # acc(prior-consistent) - acc(counter-prior), with the image
    # embedded benchmark v3 (twin pairs); see scoring._pair_balance:
    "prior_retention": True,  # acc(blind) on prior-consistent items: the text prior kept
    "image_sensitivity": True,  # share of twin pairs whose two image answers differ
    "iig_mean": True,  # mean Image Information Gain of the reference answers
    # MMStar (Chen et al. 2024) on the task's headline metric, signed so that + is better:
    "multimodal_gain": True,  # headline(image) - headline(blind), paired over the same items
    "multimodal_leakage": False,  # max(0, headline(blind) - headline(backbone text-only LM))
}


class SchemaError(UserError):
    """A results file that does not match this schema (one line, naming the field)."""


@dataclass(frozen=True)
class Metric:
    value: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    higher_is_better: bool | None = True


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    until: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SkippedItem:
    doc_id: str
    reason: str


@dataclass(frozen=True)
class ProbeResult:
    probe: str
    n: int  # samples scored under this probe
    metrics: dict[str, Metric]
    answered: dict[str, int] = field(default_factory=dict)  # answer mode -> samples


@dataclass(frozen=True)
class TaskResult:
    task: str
    version: str
    prompt_template: str
    verifier: str
    generation: GenerationSettings
    n_items: int  # items evaluated (after --limit, without skipped ones)
    items_skipped: list[SkippedItem]
    probes: dict[str, ProbeResult]
    balance: dict[str, Metric]
    headline: str = "accuracy"  # the metric of the paper table and of gain / leakage
    judge: dict[str, Any] = field(default_factory=dict)  # judged tasks: who, prompt hash, costs


@dataclass(frozen=True)
class ModelInfo:
    id: str
    family: str | None = None
    content_hash: str | None = None
    adapter_id: str | None = None
    adapter_hash: str | None = None
    dtype: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class BootstrapSettings:
    n_resamples: int
    confidence: float
    seed: int


@dataclass(frozen=True)
class Results:
    schema_version: int
    model: ModelInfo
    probes: list[str]
    bootstrap: BootstrapSettings
    tasks: dict[str, TaskResult]
    packages: dict[str, str | None]
    git_sha: str | None
    python: str
    device: str | None
    wall_time_s: float
    compute_time_s: float
    samples_per_s: float | None
    n_samples: int
    items_skipped: int
    config: dict[str, Any]
    answer_mode: str = "generate"
    answered: dict[str, int] = field(default_factory=dict)  # answer mode -> samples, all tasks
    fallbacks: dict[str, int] = field(default_factory=dict)  # reason -> samples generated
    judge: dict[str, Any] = field(default_factory=dict)  # judge id, requests, tokens, seconds
    protocol: str = "native"  # input protocol (models/families.py); absent in older files

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "results") -> Results:
        """Validate and build; raises `SchemaError` naming the first bad field."""
        if not isinstance(data, dict):
            raise SchemaError(f"{source}: expected a JSON object at the top level")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"{source}: schema_version {version!r} is not {SCHEMA_VERSION} — "
                "re-run the evaluation with this version of mbpo-bench"
            )
        return from_dict(cls, data, source, strict=True, error=SchemaError)

    @classmethod
    def from_json(cls, text: str, source: str = "results") -> Results:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        return cls.from_dict(data, source)

    @classmethod
    def read(cls, path: Path) -> Results:
        if not path.is_file():
            raise SchemaError(f"results file not found: {path} — run `mbpo-bench eval` first")
        return cls.from_json(path.read_text(), source=str(path))
