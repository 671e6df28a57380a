#!/usr/bin/env bash
# Issue 21, what is left of the FSDP figures on one H200, in one device call (<= 8 min with the
# install line; BUDGET_S=430 s for the runs; the runs go in order of need: 2., 1., 3., 4.). Each run is its own bench_fsdp.py process (each of
# its configurations a process of its own) under a time limit; every markdown is rewritten after
# each configuration, so a limit keeps the rows done, and a configuration that runs past its limit
# gets an error row naming its last progress line (built / sharded / warm-up step / timed step).
#   1. full fine-tuning with CPU offload at the LLaVA-7B shape (`fsdp-full-offload`): warm-up step
#      + 1 timed step, limit 240 s (the last call's 70 s were too short; estimate ~60-120 s: build,
#      13.5 GB of pinned parameters, and AdamW over 7B bf16 parameters on the CPU each step)
#                                                   -> $OUT/fsdp_full_offload_llava-7b.md
#   2. LoRA on the largest shape that fits one H200: Qwen2.5-VL-32B's layout (33.5B parameters,
#      ~67 GB bf16, random weights made on the GPU), batch 8, gradient checkpointing, `fsdp-lora`
#      and `ddp-lora`, 2 timed steps each (~40 s a configuration)
#                                                   -> $OUT/fsdp_lora_qwen25vl-32b.md
#   3. the rollout modes' tokens: `rollout-fsdp` (layerwise, gathered) and `rollout-ddp` (whole
#      weights), 8 prompts x 8 samples x 64 tokens, each mode called 3 times with the same seed
#      (is one mode run-to-run deterministic on CUDA?), first decode step's logits compared between
#      two probes of a mode, between modes and with the whole-weight source (~100 s)
#                                                   -> $OUT/fsdp_rollout_repeat_llava-7b.md
#   4. if >= 60 s are left: 2.'s `fsdp-lora` without gradient checkpointing (does it fit?)
#                                                   -> $OUT/fsdp_lora_nockpt_qwen25vl-32b.md
# plus $OUT/fsdp_gpu.log (every run's output, exit codes, seconds). PARTS="full_offload
# rollout_repeat" (any of lora_32b, full_offload, rollout_repeat, lora_32b_nockpt) runs only those.
#
#   bash benchmarks/gpu_fsdp.sh "$OUT"              # GPU machine, repository root, after the
#                                                   # install line
#   PYTHON=/work/venvs/f21/bin/python bash benchmarks/gpu_fsdp.sh /tmp/out --tiny
#                                                   # the same runs at tiny shapes on CPU
set -u
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_fsdp.sh OUT [--tiny]}
TINY=0
[[ "${2:-}" == "--tiny" ]] && TINY=1
PYTHON=${PYTHON:-python3}
BUDGET=${BUDGET_S:-430}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
LOG="$OUT/fsdp_gpu.log"
: >"$LOG"
START=$SECONDS
note() { echo "$*" | tee -a "$LOG"; }

PARTS=${PARTS:-lora_32b full_offload rollout_repeat lora_32b_nockpt}

run() {  # run NAME LIMIT_S N_CONFIGS ARGS...: one bench_fsdp.py process, each of its N_CONFIGS
    # configurations under --timeout LIMIT_S (less where the budget has less left)
    local name=$1 limit=$2 n=$3
    shift 3
    [[ " $PARTS " == *" $name "* ]] || return 0
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 45)); then
        note "== skip $name: $left s of $BUDGET s left"
        return
    fi
    local each=$(((left - 5) / n))
    ((limit > each)) && limit=$each
    note "== $name (--timeout $limit s a configuration) at $((SECONDS - START)) s: $PYTHON -P benchmarks/bench_fsdp.py $*"
    timeout -k 10 "$left" "$PYTHON" -P benchmarks/bench_fsdp.py "$@" --timeout "$limit" 2>&1 \
        | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    note "== $name exit $rc at $((SECONDS - START)) s"
}

if ((TINY)); then
    S7=(--shape tiny --device cpu)
    S32=(--shape tiny --family qwen2_5_vl --device cpu)
    N7=tiny
    N32=tiny-qwen2_5_vl
    STEP=(--batch 2)
    ROLL=(--rollout-prompts 2 --num-generations 2 --rollout-tokens 4)
else
    S7=(--shape llava-7b --device cuda)
    S32=(--shape qwen25vl-32b --device cuda)
    N7=llava-7b
    N32=qwen25vl-32b
    STEP=(--batch 8)
    ROLL=(--rollout-prompts 8 --num-generations 8 --rollout-tokens 64)
fi
run lora_32b 120 2 "${S32[@]}" "${STEP[@]}" --repeats 2 --checkpointing \
    --configs fsdp-lora,ddp-lora --out "$OUT/fsdp_lora_$N32.md"
run full_offload 240 1 "${S7[@]}" "${STEP[@]}" --repeats 1 --configs fsdp-full-offload \
    --out "$OUT/fsdp_full_offload_$N7.md"
run rollout_repeat 120 2 "${S7[@]}" --repeats 2 "${ROLL[@]}" --configs rollout-fsdp,rollout-ddp \
    --out "$OUT/fsdp_rollout_repeat_$N7.md"
if ((BUDGET - (SECONDS - START) >= 60)); then
    run lora_32b_nockpt 90 1 "${S32[@]}" "${STEP[@]}" --repeats 2 --configs fsdp-lora \
        --out "$OUT/fsdp_lora_nockpt_$N32.md"
fi
note "== done in $((SECONDS - START)) s; files: $(cd "$OUT" && ls | tr '\n' ' ')"
