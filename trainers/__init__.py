"""Training plugins (installed as `mbpo_bench.trainers`): SFT, DPO, GRPO and MBPO.

Pure math (torch only, each with its own tests): `advantages`, `losses`, `hybrid` (PGD and IIG,
shared with evaluation, are `mbpo_bench.modality`). Mechanics shared by every trainer: `loop` (optimizer, schedule, accumulation,
checkpoints via `checkpoint`, metrics, resume), `policy` (LoRA / full fine-tuning, reference,
final weights), `data` (items -> prompts, the preference parquet); rank helpers are
`mbpo_bench.parallel`.
Trainers, each a self-contained module with a typed config and one `run_*` function:
`sft`, `dpo`, `grpo`, `mbpo` (stage 1 = `mining`). Nothing here is imported at CLI start-up.
"""
