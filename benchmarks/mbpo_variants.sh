#!/usr/bin/env bash
# The MBPO variant sweep (reports/gpu/mbpo_variants.md): every line of VARIANTS_FILE
# ("mbpo|sft section.key=value ...") trained from BASE_RUN in its own process (2 CPU threads,
# tiny model on DEVICE), all at once, then one JSON row per variant into $OUT/rows.json.
#   OUT=/tmp/sweep bash benchmarks/mbpo_variants.sh BASE_RUN benchmarks/mbpo_variants.txt cuda
set -u
BASE=$1 FILE=$2 DEVICE=${3:-cuda}
OUT=${OUT:-/tmp/mbpo_variants}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
python3 -c "from mbpo_bench.data.registry import training_items; training_items('embedded')"
i=0
while IFS= read -r line; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    i=$((i + 1))
    read -r kind rest <<<"$line"
    # shellcheck disable=SC2086
    (timeout 500 python3 "$HERE/mbpo_variants.py" "$BASE" "$OUT/v$i" "$kind" "$DEVICE" 2 $rest \
        >"$OUT/v$i.log" 2>&1; echo "exit $?" >>"$OUT/v$i.log") &
done <"$FILE"
wait
for f in "$OUT"/v*/row.json; do cat "$f"; echo; done >"$OUT/rows.json"
