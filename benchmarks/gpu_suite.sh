#!/usr/bin/env bash
# GPU performance suite for issue 8, in ONE device call (about 6 minutes on an H200, 8 at most):
# install the package, then, each in its own process with its own time limit so that a crash or
# a hang loses only that run (each script also catches out-of-memory per configuration and
# rewrites its markdown after every configuration):
#   1. bench_eval_gpu  llava-7b    batches 1, 32, 64, 128   -> $OUT/eval_llava-7b.md
#   2. bench_grpo_step llava-7b    8 prompts x G=8, 64 tokens -> $OUT/grpo_llava-7b.md
#   3. bench_eval_gpu  qwen2vl-7b  (if time is left)          -> $OUT/eval_qwen2vl-7b.md
#   4. bench_grpo_step qwen2vl-7b  (if time is left)          -> $OUT/grpo_qwen2vl-7b.md
# plus $OUT/suite.log (every run's stdout/stderr and exit code): at most 5 files, flat.
# --tiny: the same four runs with tiny CPU models (files eval_tiny-llava.md, ...), wiring only.
#
#   bash benchmarks/gpu_suite.sh            # on the GPU machine, from the repository root
#   PYTHON=/work/venv/bin/python SITE=/tmp/suite_site OUT=/tmp/suite_out \
#     INSTALL_CMD="uv pip install -q --no-deps --python /work/venv/bin/python --target /tmp/suite_site ." \
#     bash benchmarks/gpu_suite.sh --tiny   # CPU wiring test with tiny models
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
SITE=${SITE:-/tmp/site}
PYTHON=${PYTHON:-python3}
BUDGET=${SUITE_BUDGET_S:-480}  # seconds for everything; a run that cannot start with 45 s left is skipped
INSTALL_CMD=${INSTALL_CMD:-"$PYTHON -m pip install -q --no-deps --no-build-isolation --target $SITE ."}
TINY=0
[[ "${1:-}" == "--tiny" ]] && TINY=1
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
    EVAL=(--samples 16 --baseline-samples 4 --batch-sizes 1,8,16)
    GRPO=(--prompts 2 --generations 4 --new-tokens 8 --grad-accum 2 --steps 1)
    LLAVA=(--shape tiny --family llava)
    QWEN=(--shape tiny --family qwen2_vl)
    L=tiny-llava Q=tiny-qwen2vl
else
    DEV=(--device cuda)
    EVAL=(--samples 256 --baseline-samples 32 --batch-sizes 1,32,64,128)
    GRPO=(--prompts 8 --generations 8 --new-tokens 64 --grad-accum 8 --steps 2)
    LLAVA=(--shape llava-7b)
    QWEN=(--shape qwen2vl-7b)
    L=llava-7b Q=qwen2vl-7b
fi

run eval_$L 150 benchmarks/bench_eval_gpu.py "${LLAVA[@]}" "${DEV[@]}" "${EVAL[@]}" \
    --out "$OUT/eval_$L.md"
run grpo_$L 150 benchmarks/bench_grpo_step.py "${LLAVA[@]}" "${DEV[@]}" "${GRPO[@]}" \
    --out "$OUT/grpo_$L.md"
run eval_$Q 130 benchmarks/bench_eval_gpu.py "${QWEN[@]}" "${DEV[@]}" "${EVAL[@]}" \
    --out "$OUT/eval_$Q.md"
run grpo_$Q 130 benchmarks/bench_grpo_step.py "${QWEN[@]}" "${DEV[@]}" "${GRPO[@]}" \
    --out "$OUT/grpo_$Q.md"
note "== suite done in $((SECONDS - START)) s; files: $(cd "$OUT" && ls | tr '\n' ' ')"
