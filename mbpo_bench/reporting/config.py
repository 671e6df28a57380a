"""Settings of a report: every statistical choice is a field here, saved nowhere implicit.

Defaults: 1000 paired-bootstrap resamples, 95% intervals, seed 0 (a report is reproducible bit
for bit), the primary metric of a task is its accuracy with the image (`image/accuracy`); a
task can name another one in `primary_metrics` (`{"mbpo_chair": "image/chair_s"}`). Only metrics
on a 0-1 scale enter the normalised 0-100 average; one that is lower-is-better maps to
`100 * (1 - value)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ReportConfig:
    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    primary_metric: str = "image/accuracy"  # "probe/metric", for tasks not in primary_metrics
    primary_metrics: dict[str, str] = field(default_factory=dict)
    digits: int = 3  # decimals of values on the 0-1 scale (the 0-100 scale gets digits - 2)
    mark: str = "*"  # appended to a difference whose CI excludes zero
    allow_version_mismatch: bool = False

    def primary(self, task: str) -> tuple[str, str]:
        """(probe, metric) of the task's primary metric."""
        spec = self.primary_metrics.get(task, self.primary_metric)
        probe, _, metric = spec.partition("/")
        return probe, metric
