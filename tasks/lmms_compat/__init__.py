"""lmms-eval-compatible scores: each task's metrics as lmms-eval 0.7.3 computes them, beside ours.

Why: our verifiers parse answers more carefully than lmms-eval's built-in tasks (and refuse
hedges), so our `accuracy` is not the number in lmms-eval's published tables. Every real
benchmark task therefore also reports `<metric>_lmms`: the same metric under lmms-eval 0.7.3's
own answer parsing and aggregation, re-implemented here (standard library only, no lmms-eval
import) and checked item by item against lmms-eval's functions in `tests/test_lmms_compat_parity.py`
(marker `lmms`). Where lmms-eval's rule is a known bug (POPE's yes-ratio counts ground-truth
yes) the `_lmms` metric reproduces it on purpose: it is there to be set beside published numbers.

The mechanism, for any task (built-in or user):

1. `rules.py`: one function per lmms-eval task, `rule(response, doc) -> dict`, the per-sample
   verdict under lmms-eval's parsing: `pred` (what lmms-eval reads), `gt`, `correct` (bool).
2. `process_results.py`: `with_lmms(rule)` wraps our `process_results`; the task YAML names the
   wrapped function (`process_results: !function mbpo_bench.tasks.lmms_compat.process_results.pope`),
   so every row carries `row["lmms"]` next to the verifier's verdict, in `samples.jsonl` too.
3. `metrics.py`: aggregations over `row["lmms"]`, listed in the YAML's `metric_list` as
   `<metric>_lmms` next to the verifier's metric; results.json and `mbpo-bench report` pick
   them up like any task metric.
"""
