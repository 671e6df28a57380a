"""`mbpo-bench eval`: batched, resumable evaluation with modality-balance probes.

Design decision: our own runner, with lmms-eval integrated both ways. The GPU machine has no
lmms-eval, and lmms-eval has neither modality probes nor resume after a crash, so `mbpo-bench
eval` runs its own batched loop (`runner.py`) over `TaskItem`s from our registry, which reads the
same lmms-eval-format task YAML, scored by the same per-sample row function (`process_results`)
and verifiers that lmms-eval calls. Integration:
1. `lmms_plugin.py` makes our model an lmms-eval model (`lmms_eval.api.model.lmms` subclass with
   batched `generate_until`), registered through the `lmms_eval.models` entry point, so
   `lmms-eval --model mbpo --model_args pretrained=DIR --tasks mbpo_pope_random
   --include_path ...` works with the plain lmms-eval command;
2. `--backend lmms-eval` (`lmms_backend.py`) runs the image probe through lmms-eval's
   `simple_evaluate` with that wrapper where lmms-eval is installed, into the same results files.

Modules: `config` (EvalConfig), `probes` (image/blind/mismatched/noise/adversarial/iig),
`plan` (task info, probe coverage, batches), `runner` (resumable execution), `batches` (one batch through the model -> rows),
`choices` (`answer_mode: choice`: close-ended answers by one prefill over the answer set), `store`
(samples.jsonl, timing, meta), `scoring` (rows -> metrics with CIs; `recompute_results`),
`schema` (results.json), `api` (`run_eval`; paired comparisons of two runs: `reporting.paired`),
`hashing` (cheap model content hashes), `progress` (rich bar). Nothing here imports torch,
transformers or lmms-eval at module level.
"""
