#!/usr/bin/env bash
# Issue 19, GRPO speed in one device call (H200, <= 8.5 min): LLaVA-7B shape, 8 prompts x G 8,
# 64 new tokens, LoRA r64, grad_accum 8, rollout merged+static+shared, reference and update
# passes packed (grpo.packed_scoring: each group's answers behind one copy of its prompt;
# VARIANT=merged+static+shared+compile runs without), compiled (runtime.compile_layers) and under
# bf16 autocast (runtime.autocast=auto, on for
# the bf16 model on CUDA, as TRL's bf16=True; the tiny CPU run is fp32, no autocast), compile
# caches in a fresh folder ($CACHE); every step 0 prints where its compile seconds went per
# phase ("step 0: rollout ... in torch.compile (dynamo tracing ..., backend ...)"):
#   1. ours, cold cache: 10 steps (step 0 compiles)         -> $OUT/grpo_llava-7b_cold.md
#   2. ours again, a second process on the same cache: 2 steps (the first step's compile
#      should come from the cache: within 2x the steady state)  -> $OUT/grpo_llava-7b_warm.md
#   3. TRL GRPOTrainer, same workload, up to 10 steps in what is left of the budget (120-200 s:
#      about 6 steps at ~40 s build + 22 s first + 14 s a step) -> $OUT/grpo_trl_llava-7b.{md,json}
#   4. the comparison (steady state; the first K steps of both, K = the steps TRL completed;
#      per phase, peak memory per phase), rebuilt from 1 and 3's files, so it exists even when
#      3 hits its time limit                                -> $OUT/grpo_compare_llava-7b.md
# Budget (estimates: build ~40 s a process): 1 ~270 s (step 0 compiles, ~2-3 min cold),
# 2 ~90 s, 3 the rest of BUDGET_S=490; BUDGET_S=580 gives TRL its 10 steps (a 10-min call).
# plus $OUT/grpo_speed.log (every run's output, exit codes, seconds). Each run is its own
# process under its own time limit; the markdowns are rewritten after every step, so a limit
# keeps the steps done. Order matters: TRL runs last and gets what is left of $BUDGET_S.
#
#   bash benchmarks/gpu_grpo_speed.sh "$OUT"          # GPU machine, repository root, after the
#                                                      # install line; carry .whl (TRL wheels)
#   PYTHON=/work/venvs/p19g/bin/python bash benchmarks/gpu_grpo_speed.sh /tmp/out --tiny
#                                                      # the same runs at tiny shapes on CPU
set -u
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_grpo_speed.sh OUT [--tiny]}
TINY=0
[[ "${2:-}" == "--tiny" ]] && TINY=1
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
BUDGET=${BUDGET_S:-490}  # seconds for all runs incl. the wheel install (8.2 min); the comparison ~10 s after
CACHE=${CACHE:-/tmp/mbpo_grpo_compile_cache}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
LOG="$OUT/grpo_speed.log"
: >"$LOG"
START=$SECONDS
note() { echo "$*" | tee -a "$LOG"; }

if compgen -G ".whl/*.whl" >/dev/null && ((!TINY)); then
    note "== TRL wheels: $(ls .whl/*.whl | wc -l) files into $SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl >>"$LOG" 2>&1 || note "wheel install failed (TRL row will say so)"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

run() {  # run NAME LIMIT_S ARGS...: one process; its output into the log and on screen
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 40)); then
        note "== skip $name: $left s of $BUDGET s left"
        return
    fi
    ((limit > left)) && limit=$left
    note "== $name (limit $limit s) at $((SECONDS - START)) s: $PYTHON -P $*"
    timeout -k 10 "$limit" "$PYTHON" -P "$@" 2>&1 | tee -a "$LOG" | grep --line-buffered -E \
        '^\| |^step |Error|error'
    local rc=${PIPESTATUS[0]}
    note "== $name exit $rc at $((SECONDS - START)) s"
}

if ((TINY)); then
    SHAPE=(--shape tiny --device cpu --threads 1)
    WORK=(--prompts 2 --generations 4 --new-tokens 8 --grad-accum 2)
    VARIANT=${VARIANT:-merged+shared+compile+packed}
    BACKEND=(--compile-backend "${TINY_BACKEND:-eager}")
    N=tiny
else
    SHAPE=(--shape llava-7b --device cuda)
    WORK=(--prompts 8 --generations 8 --new-tokens 64 --grad-accum 8)
    VARIANT=${VARIANT:-merged+static+shared+compile+packed}
    BACKEND=()
    N=llava-7b
fi
OURS=(benchmarks/bench_grpo_step.py "${SHAPE[@]}" "${WORK[@]}" --variants "$VARIANT"
      "${BACKEND[@]}" --compile-cache "$CACHE")
rm -rf "$CACHE"  # the first run starts cold
run ours_cold 280 "${OURS[@]}" --steps 9 --out "$OUT/grpo_${N}_cold.md"
run ours_warm 100 "${OURS[@]}" --steps 1 --out "$OUT/grpo_${N}_warm.md"
run trl 240 benchmarks/bench_grpo_trl.py "${SHAPE[@]}" "${WORK[@]}" --steps 9 \
    --out "$OUT/grpo_trl_${N}.md" --ours "$OUT/grpo_${N}_cold.md"
if [[ -f "$OUT/grpo_${N}_cold.md" && -f "$OUT/grpo_trl_${N}.json" ]]; then
    "$PYTHON" -P benchmarks/bench_grpo_trl.py --combine "$OUT/grpo_${N}_cold.md" \
        "$OUT/grpo_trl_${N}.json" --out "$OUT/grpo_compare_${N}.md" >>"$LOG" 2>&1 \
        || note "comparison failed, see $LOG"
fi
note "== done in $((SECONDS - START)) s; cache $(du -sh "$CACHE" 2>/dev/null | cut -f1); files: $(cd "$OUT" && ls | tr '\n' ' ')"
