#!/usr/bin/env bash
# GPU performance suite for issue 8: one PART per device call (each fits the 600 s limit):
#   eval        bench_eval_gpu  llava-7b, qwen2vl-7b at real geometry (issue 19): 640x480 photos,
#               native protocol, 128 yes/no items; generate at batch 1 (4 items) and 64,
#               prefill-choice at 64 with the eval loader's input workers, the same without them,
#               generate with a StaticCache (eager decode), prefill-choice and generate with
#               compiled layers (Qwen: vision blocks whole, batched attention), the anatomy of
#               one eager generate batch, then
#               lmms-eval's stock wrapper on 32 of the same items; peak memory by phase in every
#               row. Both shapes in ~280 s (build ~40 s each, stock ~30 s each, compile ~15 s,
#               Qwen's vision blocks ~20 s more)
#                                                       -> $OUT/eval_{llava-7b,qwen2vl-7b}_640x480.md
#               then qwen2vl-7b at 1280x720 (1196 image tokens): batch 64 capped by the eval's
#               default token budget (max_batch_tokens 32768 -> 27 prompts), generate and
#               prefill-choice eager + compiled, no stock wrapper: does the default fit, and its
#               peak memory by phase (~90 s); SUITE_BUDGET_S=450 covers all three
#                                                       -> $OUT/eval_qwen2vl-7b_1280x720.md
#               EVAL_RUNS="qwen qwen-hd" (any of llava, qwen, qwen-hd) runs only those
#   grpo-llava  bench_grpo_step llava-7b, 8 prompts x G=8, 64 tokens, rollout variants
#               $VARIANTS, then bench_grpo_trl (TRL GRPOTrainer, same workload; its markdown ends
#               with ours vs TRL)                       -> $OUT/grpo_llava-7b.md, grpo_trl_llava-7b.{md,json}
#   grpo-qwen   the same for qwen2vl-7b
#   profile     one lean call for "what bounds it" (issue 8's unmet targets), not in the default:
#               bench_eval_gpu llava-7b at batch 128 only (generate + prefill-choice rows, no stock
#               wrapper: its figure is committed), eager then with compiled decoder layers, each
#               profiled with the batch's anatomy (input preparation / vision / LM)
#                                                       -> $OUT/profile_eval_llava-7b.md
#               bench_grpo_step llava-7b, variants $PROF_VARIANTS (merged+static+shared and
#               +compile: compiled reference/update passes), 1 timed step + 2 update-only runs
#               each, reference and update profiled on their own (and the last variant's rollout)
#                                                       -> $OUT/profile_grpo_llava-7b.md
#               Within PROFILE_BUDGET_S (520 s): eval limit 200 s (estimate ~160: process + build
#               ~40, rows ~20, eager profile + anatomy ~20, compiled warm-up pass ~60 incl. the
#               inductor compile, compiled profile + anatomy ~20), grpo the rest up to 330 s
#               (estimate ~300: build ~40, eager variant ~55 + update-only 15 + profile 15,
#               compile variant ~25 + layer compile 60-150 + update-only 15 + profile 25)
# plus $OUT/suite.log (every run's stdout/stderr and exit code). Each run is its own process
# with its own time limit, so a crash or a hang loses only that run (each script also catches
# out-of-memory per configuration and rewrites its markdown after every configuration).
# Wheels in .whl/ (benchmarks/gpu_wheels_*.txt) are installed when present: carry `.whl`.
# --tiny: the same runs with tiny CPU models (files eval_tiny-llava.md, ...), wiring only.
#
#   bash benchmarks/gpu_suite.sh eval         # on the GPU machine, from the repository root
#   bash benchmarks/gpu_suite.sh grpo-llava
#   PYTHON=/work/venv/bin/python SITE=/tmp/suite_site OUT=/tmp/suite_out \
#     INSTALL_CMD="uv pip install -q --no-deps --python /work/venv/bin/python --target /tmp/suite_site ." \
#     bash benchmarks/gpu_suite.sh --tiny [PART...]  # CPU wiring test with tiny models
#   bash benchmarks/gpu_suite.sh profile      # the lean profiling call (<= 520 s; ~460 s expected)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
SITE=${SITE:-/tmp/site}
PYTHON=${PYTHON:-python3}
BUDGET=${SUITE_BUDGET_S:-560}  # seconds for everything; a run that cannot start with 45 s left is skipped
INSTALL_CMD=${INSTALL_CMD:-"$PYTHON -m pip install -q --no-deps --no-build-isolation --target $SITE ."}
TINY=0
[[ "${1:-}" == "--tiny" ]] && { TINY=1; shift; }
PARTS=("$@")  # eval, grpo-llava, grpo-qwen, profile (default: the first three; one call fits one)
((${#PARTS[@]})) || PARTS=(eval grpo-llava grpo-qwen)
want() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }
mkdir -p "$OUT"
LOG="$OUT/suite.log"
: >"$LOG"
START=$SECONDS

note() { echo "$*" | tee -a "$LOG"; }

note "== install: $INSTALL_CMD"
if ! eval "$INSTALL_CMD" >>"$LOG" 2>&1; then
    note "install failed, see $LOG"
    exit 1
fi
# Wheels carried in .whl/ (lmms-eval and its missing imports, TRL, ...: see benchmarks/gpu_wheels_*.txt)
WHEEL_CMD=${WHEEL_CMD:-"$PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .whl/*.whl"}
if compgen -G ".whl/*.whl" >/dev/null; then
    note "== install wheels ($(ls .whl/*.whl | wc -l) files): $WHEEL_CMD"
    eval "$WHEEL_CMD" >>"$LOG" 2>&1 || note "wheel install failed (peer rows will say so), see $LOG"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
note "== installed after $((SECONDS - START)) s; $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"

run() {  # run NAME LIMIT_S ARGS... : one benchmark process under its own time limit
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 45)); then
        note "== skip $name: only $left s of the suite's $BUDGET s left"
        return
    fi
    ((limit > left)) && limit=$left
    note "== $name (limit $limit s) at $((SECONDS - START)) s: $*"
    timeout -k 10 "$limit" "$PYTHON" "$@" >>"$LOG" 2>&1
    note "== $name exit $? at $((SECONDS - START)) s"
}

if ((TINY)); then
    DEV=(--device cpu --threads 1)
    EVAL=(--image-size 640x480 --samples 16 --baseline-samples 4 --batch-sizes 1,8 --stock-samples 8
          --paths generate,prefill-choice --compile --compile-backend eager --input-workers 2
          --generate-anatomy --static-cache)
    EVAL_HD=(--image-size 1280x720 --samples 8 --baseline-samples 2 --batch-sizes 8
             --max-batch-tokens 200 --paths generate,prefill-choice --compile --compile-backend eager
             --no-stock --input-workers 0)
    GRPO=(--prompts 2 --generations 4 --new-tokens 8 --grad-accum 2 --steps 1)
    PROFILE=(--profile)
    VARIANTS=default,merged+shared
    PROF_EVAL=(--samples 16 --baseline-samples 4 --batch-sizes 16 --compile-backend eager)
    PROF_GRPO=(--prompts 2 --generations 4 --new-tokens 8 --grad-accum 2 --steps 1 --update-only 1
               --compile-backend eager)
    PROF_VARIANTS=merged+shared,merged+shared+compile
    LLAVA=(--shape tiny --family llava)
    QWEN=(--shape tiny --family qwen2_vl)
    L=tiny-llava Q=tiny-qwen2vl
else
    DEV=(--device cuda)
    EVAL=(--image-size 640x480 --samples 128 --baseline-samples 4 --batch-sizes 1,64 --stock-samples 32
          --paths generate,prefill-choice --compile --stock-dir /dev/shm --generate-anatomy
          --static-cache)
    EVAL_HD=(--image-size 1280x720 --samples 54 --baseline-samples 2 --batch-sizes 64
             --max-batch-tokens 32768 --paths generate,prefill-choice --compile --no-stock
             --input-workers 0)
    GRPO=(--prompts 8 --generations 8 --new-tokens 64 --grad-accum 8 --steps 2)
    PROFILE=(--profile)  # ours only: one extra profiled step, by operator class
    VARIANTS=${VARIANTS:-default,merged+static,merged+static+shared}
    PROF_EVAL=(--samples 256 --baseline-samples 32 --batch-sizes 128)
    PROF_GRPO=(--prompts 8 --generations 8 --new-tokens 64 --grad-accum 8 --steps 1 --update-only 2)
    PROF_VARIANTS=${PROF_VARIANTS:-merged+static+shared,merged+static+shared+compile}
    LLAVA=(--shape llava-7b)
    QWEN=(--shape qwen2vl-7b)
    L=llava-7b Q=qwen2vl-7b
fi

# EVAL_RUNS picks the eval part's runs (default all three; a short call can skip one)
EVAL_RUNS=${EVAL_RUNS:-llava qwen qwen-hd}
has_run() { [[ " $EVAL_RUNS " == *" $1 "* ]]; }
if want eval; then
    has_run llava && run eval_$L 185 benchmarks/bench_eval_gpu.py "${LLAVA[@]}" "${DEV[@]}" \
        "${EVAL[@]}" --out "$OUT/eval_${L}_640x480.md"
    has_run qwen && run eval_$Q 185 benchmarks/bench_eval_gpu.py "${QWEN[@]}" "${DEV[@]}" \
        "${EVAL[@]}" --out "$OUT/eval_${Q}_640x480.md"
    has_run qwen-hd && run eval_${Q}_1280x720 150 benchmarks/bench_eval_gpu.py "${QWEN[@]}" \
        "${DEV[@]}" "${EVAL_HD[@]}" --out "$OUT/eval_${Q}_1280x720.md"
fi
for fam in llava qwen; do
    want grpo-$fam || continue
    if [[ $fam == llava ]]; then SHAPE=("${LLAVA[@]}") N=$L; else SHAPE=("${QWEN[@]}") N=$Q; fi
    run grpo_$N 330 benchmarks/bench_grpo_step.py "${SHAPE[@]}" "${DEV[@]}" "${GRPO[@]}" "${PROFILE[@]}" \
        --variants "$VARIANTS" --out "$OUT/grpo_$N.md"
    run grpo_trl_$N 220 benchmarks/bench_grpo_trl.py "${SHAPE[@]}" "${DEV[@]}" "${GRPO[@]}" \
        --out "$OUT/grpo_trl_$N.md" --ours "$OUT/grpo_$N.md"
done
if want profile; then  # both runs within PROFILE_BUDGET_S; grpo gets what eval leaves, <= 330 s
    PROFILE_BUDGET=${PROFILE_BUDGET_S:-520}
    run profile_eval_$L 200 benchmarks/bench_eval_gpu.py "${LLAVA[@]}" "${DEV[@]}" "${PROF_EVAL[@]}" \
        --paths generate,prefill-choice --no-stock --compile --profile --out "$OUT/profile_eval_$L.md"
    GRPO_LIMIT=$((PROFILE_BUDGET - (SECONDS - START)))
    ((GRPO_LIMIT > 330)) && GRPO_LIMIT=330
    run profile_grpo_$L "$GRPO_LIMIT" benchmarks/bench_grpo_step.py "${LLAVA[@]}" "${DEV[@]}" \
        "${PROF_GRPO[@]}" --variants "$PROF_VARIANTS" --profile --out "$OUT/profile_grpo_$L.md"
fi
note "== suite done in $((SECONDS - START)) s; files: $(cd "$OUT" && ls | tr '\n' ' ')"
