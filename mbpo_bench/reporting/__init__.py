"""Reports that compare checkpoints, rendered from results files only.

- `render_report(run_dirs, baseline=..., out=...)` writes the report and its PNG figures;
- `compare(run_a, run_b, task, probe)` is a paired difference with its bootstrap CI;
- `subset_metric(run, task, subset=meta_is(prior="counter"))` is a metric on a subset of items.

Modules: `loading` (run folders), `paired` (per-item values, paired stats), `tables`,
`differences`, `provenance`, `format` (cells, markdown), `render` (the report); figures:
`figures` (style, palette, PNG writer), `balance_figure`, `forest`, `plots` (training curves),
`report_figures` (each figure written beside the report and linked); over seeds: `seeds`
(t interval over seeds, Holm, per-item CI of the seed mean; a run's training seed),
`seed_differences` (an arm's paired differences over its seeds).
Imports pandas and numpy: the CLI imports this package inside the command only.
"""

from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.loading import RunData, load_run
from mbpo_bench.reporting.paired import compare, item_values, meta_is, subset_metric
from mbpo_bench.reporting.render import render_report

__all__ = [
    "ReportConfig",
    "RunData",
    "compare",
    "item_values",
    "load_run",
    "meta_is",
    "render_report",
    "subset_metric",
]
