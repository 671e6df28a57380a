#!/usr/bin/env bash
# The science runs of issues 7 and 8 on one GPU machine, as one detached job that survives
# between device commands; poll it, then collect at most 6 files.
#
#   Phase 1, at once, each its own process (own log, `timeout`-guarded, 1-2 CPU threads):
#     small       mbpo-bench quickstart size=small (issue 8)  -> reports/quickstart_small.md
#     b<S>-s<K>   the seed study (issue 7): quickstart tiny at seeds 0..4 with the default base
#                 (S=1000 SFT steps) and with base.optim.steps=4000; control_steps=357 for every
#                 one (the time-matched control of the committed reports/quickstart.md had 357
#                 steps), so the control does not depend on GPU timing under load
#   Phase 2, once the small quickstart finished (PHASE2_AFTER=base: once its base exists):
#     ablate      mbpo-bench ablate from the small quickstart's base with the quickstart's MBPO
#                 settings (see ablate_overrides), --jobs 6 when the CLI has it
#   At the end: seed-study table (benchmarks/seed_study.py) and the pack (collect).
#
# Usage (from the repository root on the GPU machine, after `pip install --target /tmp/site .`):
#   setsid nohup bash benchmarks/gpu_science.sh start /tmp/sci >/tmp/sci.log 2>&1 &
#   bash benchmarks/gpu_science.sh status /tmp/sci          # also in /tmp/sci/status.txt (20 s)
#   bash benchmarks/gpu_science.sh collect /tmp/sci $OUT    # <= 6 files; partial if not done
#   bash benchmarks/gpu_science.sh stop /tmp/sci            # kill what still runs
#   bash benchmarks/gpu_science.sh plan /tmp/sci_plan       # print every command, run nothing
# CPU wiring test (tiny budgets, <= 3 processes at once, 1 thread each):
#   PYTHON=/work/venv/bin/python DEVICE=cpu bash benchmarks/gpu_science.sh start /tmp/sci_tiny --tiny
#
# Environment: PYTHON (python3), DEVICE (cuda), SITE (/tmp/site: prepended to PYTHONPATH when it
# holds mbpo_bench), MBPO_BENCH_CACHE (OUT/cache: one cache for every run; the quickstart's
# base cache key holds size, seed and the SFT config, so no two of these runs share a base),
# DEADLINE_S (960: no job runs past this many seconds after start; a late job gets the time
# left), PHASE2_AFTER (quickstart | base), SMALL_CONTROL (357, or "time" for the quickstart's
# time-matched control), ABLATE_JOBS (6).
#
# Pack (OUT/pack, copied by collect): quickstart_small.md, quickstart_small_timings.json,
# ablation_report.md, ablation_per_seed.csv, seed_study.md, science_bundle.tar.gz (logs, status,
# every json/csv/md/yaml, training metrics, mined pairs (text only); per-sample results while
# the tarball stays under 15 MiB; never model weights or the dataset cache). A missing file is
# left out (logged). An ablation stopped by its time limit gets a report of its evaluated runs.
set -u
cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SITE=${SITE:-/tmp/site}
PHASE2_AFTER=${PHASE2_AFTER:-quickstart}
SMALL_CONTROL=${SMALL_CONTROL:-357}
ABLATE_JOBS=${ABLATE_JOBS:-6}
TINY=0
if [[ -d "$SITE/mbpo_bench" ]]; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
# `python -m mbpo_bench` from the repository root would import the source tree's mbpo_bench (which
# lacks the installed mbpo_bench.trainers / .tasks mapping) before the installed one: seen on the
# H200 as "No module named 'mbpo_bench.trainers'" in every job. Python 3.11+: keep cwd off sys.path.
export PYTHONSAFEPATH=1

usage() {
    sed -n '/^# Usage/,/^# CPU wiring/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------- settings per mode
setup() {
    if ((TINY)); then
        DEADLINE_S=${DEADLINE_S:-1500}
        MAX_PROCS=3 # the CPU box is shared: at most 3 processes at once
        SEEDS=(0 1)
        SEED_STEPS=(8 4)          # stands for 4000 and 1000
        SMALL_SIZE=tiny           # the wiring of `size=small` without its CPU cost
        SEED_CONTROL=2
        SMALL_CONTROL=2
        QS_THREADS_SMALL=1
        QS_THREADS_SEED=1
        SMALL_EXTRA=(base.optim.steps=6) # 6: its base must not share a cache key with b4-s0
        QS_EXTRA=(base.optim.batch_size=4 mbpo.optim.steps=2 mbpo.mining.limit=64
            mbpo.grpo.generation_batch_size=32 eval_limit=20 eval_batch_size=16)
        ABLATE_ARGS=(--seeds "0,1" --steps 2 --batch-size 2 --eval-limit 10
            --arms "sft,dpo-pgd,grpo,mbpo-pgd-iig-online")
        ABLATE_JOBS=2
        ABLATE_THREADS=1
        MINING_LIMIT=64
        GEN_WORKERS=1
        GEN_BATCH=32
        EVAL_BATCH=16
    else
        DEADLINE_S=${DEADLINE_S:-960}
        MAX_PROCS=1000
        SEEDS=(0 1 2 3 4)
        SEED_STEPS=(4000 1000) # the long bases first: they are the critical path
        SMALL_SIZE=small
        SEED_CONTROL=357
        QS_THREADS_SMALL=2
        QS_THREADS_SEED=1
        SMALL_EXTRA=()
        QS_EXTRA=()
        ABLATE_ARGS=(--seeds "0,1" --steps 60 --eval-limit 300)
        ABLATE_THREADS=2
        MINING_LIMIT=1024
        GEN_WORKERS=12 # processes drawing the dataset's PNGs, once, before anything else runs
        GEN_BATCH=256
        EVAL_BATCH=64
    fi
    JOB_TIMEOUT_S=${JOB_TIMEOUT_S:-$DEADLINE_S}
}

# The quickstart's MBPO settings (mbpo_bench/quickstart.py `_mbpo()`), as ablation overrides.
# Decision: keys that DPO or GRPO also have (mining.*, grpo.*) go unscoped, so the dpo-pgd arm
# trains on the very pairs file of the MBPO pgd-iig arms (the ablation's own design) and plain
# GRPO rolls out like MBPO's online half; `hybrid.*` exists only in MBPO (mbpo:). Everything is
# full fine-tuning as in the quickstart, and continued SFT keeps the base's recipe
# (blind_fraction 0.1) as the quickstart's control does. ABLATE_SCOPE=mbpo scopes mining.* and
# grpo.* to MBPO only (the baselines then use the trainers' defaults and DPO mines its own pairs).
ablate_overrides() {
    local p=""
    [[ "${ABLATE_SCOPE:-shared}" == mbpo ]] && p="mbpo:"
    OVR=(full_finetune=true "runtime.threads=$ABLATE_THREADS" "runtime.device=$DEVICE"
        runtime.progress=false runtime.tensorboard=false
        "${p}mining.limit=$MINING_LIMIT" "${p}mining.batch_size=64" "${p}mining.iig_top_fraction=0.1"
        "${p}mining.eps=0.12549019607843137" "${p}mining.alpha=0.03137254901960784"
        "${p}mining.keep=prior" "${p}grpo.max_new_tokens=3" "${p}grpo.oversample=4"
        "${p}grpo.generation_batch_size=$GEN_BATCH" mbpo:hybrid.online_pool=mined
        sft:blind_fraction=0.1 "eval:batch_size=$EVAL_BATCH" "eval:device=$DEVICE")
}

# ---------------------------------------------------------------- jobs
now() { date +%s; }
note() { echo "[$(date +%T)] $*" | tee -a "$OUT/logs/main.log" >&2; }
state() { echo "$OUT/state/$1"; }

# Sets CMD (array) and THREADS for job $1.
build_cmd() {
    local name=$1 qs=("$PYTHON" -m mbpo_bench quickstart)
    local dev=("base.runtime.device=$DEVICE" "mbpo.runtime.device=$DEVICE")
    case $name in
    small)
        THREADS=$QS_THREADS_SMALL
        CMD=("${qs[@]}" --output "$OUT/small" --report "$OUT/reports/quickstart_small.md"
            --threads "$THREADS" "size=$SMALL_SIZE" "${dev[@]}" "${QS_EXTRA[@]}" "${SMALL_EXTRA[@]}")
        # Fixed control steps: under parallel load the time match would measure the load
        # (the base's s/step and MBPO's seconds are taken under different loads), not the
        # method; 357 = the committed CPU report's time-matched control (the previous GPU run,
        # alone and with the old 100-step MBPO, matched 488). timings.json keeps both times.
        [[ "$SMALL_CONTROL" != time ]] && CMD+=("control_steps=$SMALL_CONTROL")
        ;;
    b*-s*)
        local steps=${name#b} seed=${name#*-s}
        steps=${steps%%-*}
        THREADS=$QS_THREADS_SEED
        CMD=("${qs[@]}" --output "$OUT/seed/$name" --report "$OUT/seed/$name/report.md"
            --threads "$THREADS" "seed=$seed" "${dev[@]}" "${QS_EXTRA[@]}"
            "base.optim.steps=$steps" "control_steps=$SEED_CONTROL")
        ;;
    ablate)
        THREADS=$ABLATE_THREADS
        ablate_overrides
        CMD=("$PYTHON" -m mbpo_bench ablate --model "$(cat "$(state ablate.model)")"
            --output "$OUT/ablation" "${ABLATE_ARGS[@]}" --probes "image,blind,mismatched"
            --no-progress)
        if [[ $(ablate_jobs) -gt 1 ]]; then
            CMD+=(--jobs "$ABLATE_JOBS")
        else
            note "ablate has no --jobs (or ABLATE_JOBS=1): its runs go one after another"
        fi
        CMD+=("${OVR[@]}")
        ;;
    *) note "unknown job $name" && return 1 ;;
    esac
}

# Processes the ablation runs at once: ABLATE_JOBS when `ablate --help` lists --jobs (another
# change adds it), else 1; asked once and remembered in state/ablate.jobs.
ablate_jobs() {
    local f
    f=$(state ablate.jobs)
    if [[ ! -f $f ]]; then
        if "$PYTHON" -m mbpo_bench ablate --help 2>/dev/null | grep -q -- '--jobs'; then
            echo "$ABLATE_JOBS" >"$f"
        else
            echo 1 >"$f"
        fi
    fi
    cat "$f"
}

# Weight of a job in process slots (the ablation's workers count).
weight() { if [[ $1 == ablate ]]; then ablate_jobs; else echo 1; fi; }

running_weight() {
    local total=0 f name
    for f in "$OUT"/state/*.start; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .start)
        [[ -e $(state "$name.rc") ]] || total=$((total + $(cat "$(state "$name.w")")))
    done
    echo "$total"
}

launch() {
    local name=$1 left limit
    left=$((DEADLINE_S - ($(now) - T0)))
    if [[ -e $(state stop) ]]; then
        note "$name not started: stopped"
        echo skipped >"$(state "$name.rc")"
        return
    fi
    if ((left < 60)); then
        note "$name not started: $left s left before DEADLINE_S=$DEADLINE_S"
        echo skipped >"$(state "$name.rc")"
        return
    fi
    limit=$((JOB_TIMEOUT_S < left ? JOB_TIMEOUT_S : left))
    build_cmd "$name" || { echo 1 >"$(state "$name.rc")"; return; }
    printf '%q ' "${CMD[@]}" >"$(state "$name.cmd")"
    echo >>"$(state "$name.cmd")"
    weight "$name" >"$(state "$name.w")"
    now >"$(state "$name.start")"
    note "start $name (limit ${limit}s, $THREADS threads): $(cat "$(state "$name.cmd")")"
    (
        # timeout leads its own process group and signals all of it (ablation workers too)
        OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS \
            timeout -k 30 "$limit" "${CMD[@]}" </dev/null >"$OUT/logs/$name.log" 2>&1 &
        echo $! >"$(state "$name.tpid")"
        wait $!
        echo $? >"$(state "$name.rc.tmp")"
        now >"$(state "$name.end")"
        mv "$(state "$name.rc.tmp")" "$(state "$name.rc")"
    ) &
    JOB_PIDS+=($!)
}

ended() { [[ -e $(state "$1.rc") ]]; }

# The base the small quickstart trained MBPO from (its cache copy); empty until it exists.
small_base() {
    local cfg="$OUT/small/mbpo/config.yaml"
    [[ -f $cfg ]] || return 0
    "$PYTHON" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["model"])' "$cfg"
}

phase2_step() { # prints: wait | launch | skip
    local base=""
    if [[ $PHASE2_AFTER == base ]] || ended small; then base=$(small_base); fi
    if [[ -n $base ]]; then
        echo "$base" >"$(state ablate.model)"
        echo launch
    elif ended small; then
        echo skip
    else
        echo wait
    fi
}

# ---------------------------------------------------------------- status
fmt_job() {
    local name=$1 st el rc="" tail_line=""
    if [[ -e $(state "$name.rc") ]]; then
        rc=$(cat "$(state "$name.rc")")
        case $rc in
        0) st=finished ;;
        124 | 137) st="TIMED OUT" ;;
        skipped) st=skipped ;;
        *) st=FAILED && [[ -e $(state stop) && $rc == 143 ]] && st=stopped ;;
        esac
        el=$(($(cat "$(state "$name.end")" 2>/dev/null || now) - $(cat "$(state "$name.start")" 2>/dev/null || now)))
    elif [[ -e $(state "$name.start") ]]; then
        st=running
        el=$(($(now) - $(cat "$(state "$name.start")")))
    else
        st=waiting
        el=0
    fi
    if [[ -f $OUT/logs/$name.log ]]; then
        # the last message, not a progress bar (they end lines with \r)
        tail_line=$(tr '\r' '\n' <"$OUT/logs/$name.log" | grep -v -e '^\s*$' -e 'Loading weights' \
            -e 'Writing model shards' | tail -n 1 | cut -c1-110)
    fi
    printf '%-12s %-10s %6ss  rc=%-7s %s\n' "$name" "$st" "$el" "$rc" "$tail_line"
}

write_status() {
    local t0 t1 main="not running" names name
    t0=$(cat "$(state t0)" 2>/dev/null || now)
    t1=$(now)
    if [[ -e $(state all_ended) ]]; then
        main="finished"
        t1=$(stat -c %Y "$(state all_ended)")
    elif kill -0 "$(cat "$(state main.pid)" 2>/dev/null || echo 0)" 2>/dev/null; then
        main="running"
    fi
    names=$(cat "$(state jobs)" 2>/dev/null)
    {
        echo "gpu_science $(cat "$(state mode)" 2>/dev/null) at $(date '+%F %T'); elapsed $((t1 - t0)) s; main: $main"
        cat "$(state phase2)" 2>/dev/null
        for name in $names; do fmt_job "$name"; done
    } >"$OUT/status.txt.tmp"
    mv "$OUT/status.txt.tmp" "$OUT/status.txt"
}

# ---------------------------------------------------------------- pack
partial_ablation_report() {
    [[ -f $OUT/ablation/ablation.yaml && ! -f $OUT/ablation/report.md ]] || return 0
    note "ablation report.md missing: writing one from the evaluated runs (partial)"
    timeout 300 "$PYTHON" - "$OUT/ablation" <<'EOF' >>"$OUT/logs/pack.log" 2>&1 || note "partial ablation report failed (logs/pack.log)"
import shlex, sys
from pathlib import Path
from mbpo_bench.ablation.config import AblationConfig
from mbpo_bench.ablation.execute import write_outputs
from mbpo_bench.ablation.plan import build_plan
from mbpo_bench.config import load_config
out = Path(sys.argv[1])
cfg = load_config(AblationConfig, out / "ablation.yaml")
argv = shlex.split((out / "command.txt").read_text()) if (out / "command.txt").is_file() else []
note = "stopped before its end (time limit, or still running when collected): the tables hold only the runs evaluated by then"
write_outputs(build_plan(cfg, out), {"ablation": note}, argv)
EOF
}

seed_study() {
    [[ -d $OUT/seed ]] || return 0
    local how tiny=""
    ((TINY)) && tiny=" --tiny"
    how="bash benchmarks/gpu_science.sh start OUT$tiny: mbpo-bench quickstart --threads 1 seed=K"
    how+=" base.optim.steps=S control_steps=$SEED_CONTROL (size tiny)"
    timeout 600 "$PYTHON" "$REPO/benchmarks/seed_study.py" "$OUT/seed" \
        --output "$OUT/reports/seed_study.md" --runs-command "$how" >>"$OUT/logs/pack.log" 2>&1 ||
        note "seed study failed (logs/pack.log)"
}

bundle() { # $1: which per-sample files to include: all | seed | none
    local list="$OUT/pack/.files" keep=$1
    (
        cd "$OUT" || exit 1
        find . \( -path ./cache -o -path ./pack -o -name checkpoints -o -name final -o -name tiny \) -prune -o \
            -type f \( -name '*.log' -o -name '*.txt' -o -name '*.json' -o -name '*.csv' -o -name '*.md' \
            -o -name '*.yaml' -o -name 'metrics.jsonl' -o -name 'timing.jsonl' -o -path './reports/*.png' \
            -o -name 'pairs.parquet' \
            -o -name 'samples.jsonl' \) -print |
            grep -v -e '/tokenizer' -e 'vocab\.json$' |
            { case $keep in all) cat ;; seed) grep -v -e '^./ablation/.*samples.jsonl$' ;; *) grep -v 'samples.jsonl$' ;; esac; } |
            sort >"$list"
        tar -czf pack/science_bundle.tar.gz -T "$list"
    )
}

pack() {
    mkdir -p "$OUT/pack"
    partial_ablation_report
    seed_study
    write_status
    rm -f "$OUT"/pack/*
    local src dst
    for pair in reports/quickstart_small.md:quickstart_small.md small/timings.json:quickstart_small_timings.json \
        ablation/report.md:ablation_report.md ablation/per_seed.csv:ablation_per_seed.csv \
        reports/seed_study.md:seed_study.md; do
        src=$OUT/${pair%%:*} dst=$OUT/pack/${pair#*:}
        if [[ -f $src ]]; then cp "$src" "$dst"; else note "pack: $src missing, left out"; fi
    done
    local limit=$((15 * 1024 * 1024)) mode size
    for mode in all seed none; do
        bundle "$mode"
        size=$(stat -c %s "$OUT/pack/science_bundle.tar.gz")
        ((size < limit)) && break
        note "pack: bundle with per-sample files ($mode) is $size bytes, trying with fewer"
    done
    rm -f "$OUT/pack/.files"
    note "pack: $(stat -c '%n %s bytes;' "$OUT"/pack/* | tr '\n' ' ')"
}

# ---------------------------------------------------------------- commands
start() {
    mkdir -p "$OUT"/{logs,state,reports,pack}
    if [[ -e $(state main.pid) ]] && kill -0 "$(cat "$(state main.pid)")" 2>/dev/null; then
        echo "gpu_science: already running in $OUT (pid $(cat "$(state main.pid)"))" >&2
        exit 1
    fi
    rm -f "$OUT"/state/* "$OUT/status.txt"
    export MBPO_BENCH_CACHE=${MBPO_BENCH_CACHE:-$OUT/cache}
    T0=$(now)
    echo "$T0" >"$(state t0)"
    echo $$ >"$(state main.pid)"
    echo "$( ((TINY)) && echo tiny || echo full) device=$DEVICE deadline=${DEADLINE_S}s phase2_after=$PHASE2_AFTER" >"$(state mode)"
    local pending=(small) s k
    JOB_PIDS=()
    for s in "${SEED_STEPS[@]}"; do for k in "${SEEDS[@]}"; do pending+=("b$s-s$k"); done; done
    echo "${pending[*]} ablate" >"$(state jobs)"
    local what=" to finish"
    [[ $PHASE2_AFTER == base ]] && what="'s base"
    echo "phase 2 (ablate): waiting for the small quickstart$what (PHASE2_AFTER=$PHASE2_AFTER)" >"$(state phase2)"
    note "gpu_science start: OUT=$OUT $(cat "$(state mode)") python=$PYTHON cache=$MBPO_BENCH_CACHE"
    (while [[ ! -e $(state all_ended) ]] && kill -0 "$(cat "$(state main.pid)")" 2>/dev/null; do
        write_status
        sleep 20
    done) &

    if ! timeout 120 "$PYTHON" -c "
import sys, torch, mbpo_bench
ok = '$DEVICE' == 'cpu' or torch.cuda.is_available()
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'mbpo_bench', mbpo_bench.__file__)
sys.exit(0 if ok else 1)" >>"$OUT/logs/main.log" 2>&1; then
        note "python/torch/device check failed for DEVICE=$DEVICE (logs/main.log): nothing started"
        touch "$(state all_ended)"
        write_status
        exit 1
    fi
    note "embedded benchmark: generating once before the parallel runs"
    timeout 900 "$PYTHON" -c "
from mbpo_bench.data.embedded import generate_embedded
from mbpo_bench.data.registry import embedded_config_from_env
print('embedded benchmark:', generate_embedded(embedded_config_from_env(), workers=$GEN_WORKERS))" \
        >>"$OUT/logs/main.log" 2>&1 || note "embedded generation failed (logs/main.log); the runs will try again"

    local phase2=wait step
    while :; do
        if [[ $phase2 == wait ]]; then
            step=$(phase2_step)
            if [[ $step == skip ]]; then
                phase2=over
                echo skipped >"$(state ablate.rc)"
                echo "phase 2 (ablate): skipped, the small quickstart made no base" >"$(state phase2)"
                note "phase 2 skipped: the small quickstart ended without a base"
            elif [[ $step == launch ]]; then
                phase2=ready
            fi
        fi
        if [[ $phase2 == ready ]]; then
            if (($(running_weight) + $(weight ablate) <= MAX_PROCS)) || (($(running_weight) == 0)); then
                launch ablate
                if [[ -e $(state ablate.start) ]]; then
                    echo "phase 2 (ablate): started from $(cat "$(state ablate.model)")"
                else
                    echo "phase 2 (ablate): not started (stopped, or too close to DEADLINE_S)"
                fi >"$(state phase2)"
                phase2=over
            fi
        fi
        # phase-1 jobs take free slots unless the ablation is waiting for its slots
        while ((${#pending[@]})) && [[ $phase2 != ready ]] && (($(running_weight) < MAX_PROCS)); do
            launch "${pending[0]}"
            pending=("${pending[@]:1}")
        done
        if ((${#pending[@]} == 0)) && [[ $phase2 == over ]] && (($(running_weight) == 0)); then
            break
        fi
        sleep 5
    done
    # not a bare wait: the status loop runs until all_ended
    ((${#JOB_PIDS[@]} == 0)) || wait "${JOB_PIDS[@]}"
    note "all jobs ended; packing"
    pack
    touch "$(state all_ended)"
    write_status
    note "done in $(($(now) - T0)) s"
}

stop() {
    local f pid
    touch "$(state stop)" # nothing new starts; the main process packs once its jobs are gone
    for f in "$OUT"/state/*.tpid; do
        [[ -e $f ]] || continue
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            echo "stopping $(basename "$f" .tpid) (process group $pid)"
            kill -TERM -- "-$pid" 2>/dev/null
        fi
    done
    pid=$(cat "$(state main.pid)" 2>/dev/null || echo "")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "main $pid packs and ends once its jobs are gone"
}

main() {
    local cmd=${1:-}
    [[ $# -ge 2 ]] || usage
    OUT=$(realpath -m "$2")
    shift 2
    for arg in "$@"; do [[ $arg == --tiny ]] && TINY=1; done
    if [[ -f $OUT/state/mode && $cmd != start ]]; then
        grep -q '^tiny' "$OUT/state/mode" && TINY=1
    fi
    setup
    case $cmd in
    start) start ;;
    status)
        [[ -d $OUT/state ]] || { echo "no run in $OUT" >&2; exit 1; }
        write_status
        cat "$OUT/status.txt"
        ;;
    collect)
        local dest=${1:-}
        [[ -n $dest ]] || usage
        [[ -d $OUT/state ]] || { echo "no run in $OUT" >&2; exit 1; }
        [[ -e $(state all_ended) ]] || note "collect while not done: packing what exists now"
        [[ -e $(state all_ended) ]] || pack
        mkdir -p "$dest"
        cp "$OUT"/pack/* "$dest"/
        ls -l "$dest"
        ;;
    stop) stop ;;
    plan) # print every job's command, run nothing
        mkdir -p "$OUT/state" && echo "<the small quickstart's base>" >"$(state ablate.model)"
        local name
        for name in small $(for s in "${SEED_STEPS[@]}"; do for k in "${SEEDS[@]}"; do
            echo "b$s-s$k"; done; done) ablate; do
            build_cmd "$name" 2>/dev/null && echo "$name: $(printf '%q ' "${CMD[@]}")"
        done
        ;;
    *) usage ;;
    esac
}

main "$@"
