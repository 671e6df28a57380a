#!/usr/bin/env bash
# The README's install sizes (section "Set up"), in throwaway folders under $TMP (deleted after).
#   bash benchmarks/install_size.sh            # CPU-first venv, plain venv, uv hardlink vs copy
# CPU_TORCH: how pip gets the CPU build (default: the PyTorch CPU index; a machine with the
# wheel in its pip find-links can use CPU_TORCH="torch==2.13.0").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=${TMP:-/tmp}/mbpo-install-size
CPU_TORCH=${CPU_TORCH:-"torch --index-url https://download.pytorch.org/whl/cpu"}
rm -rf "$TMP" && mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT

python -m venv "$TMP/cpu"
# shellcheck disable=SC2086
"$TMP/cpu/bin/pip" install -q $CPU_TORCH
"$TMP/cpu/bin/pip" install -q -e "$ROOT"
echo "CPU torch first: $(du -sh "$TMP/cpu" | cut -f1) ($("$TMP/cpu/bin/python" -c 'import torch; print(torch.__version__)'))"
rm -rf "$TMP/cpu"

python -m venv "$TMP/plain"
"$TMP/plain/bin/pip" install -q -e "$ROOT"
echo "plain pip install -e .: $(du -sh "$TMP/plain" | cut -f1) ($("$TMP/plain/bin/python" -c 'import torch; print(torch.__version__)')), nvidia-*: $(du -sch "$TMP"/plain/lib/python3*/site-packages/nvidia* 2>/dev/null | tail -1 | cut -f1)"
rm -rf "$TMP/plain"

# what tox-uv does per env: uv installs into each venv from its cache
export UV_CACHE_DIR="$TMP/uv-cache"
# uv reads no pip.conf: give it pip's find-links (where a local CPU wheel may sit)
[ -n "${PIP_FIND_LINKS:-}" ] && export UV_FIND_LINKS="$PIP_FIND_LINKS"
for mode in hardlink copy; do
  for env in a b; do
    uv venv -q "$TMP/$mode-$env"
    # shellcheck disable=SC2086
    VIRTUAL_ENV="$TMP/$mode-$env" uv pip install -q --link-mode=$mode $CPU_TORCH
  done
  echo "uv link-mode=$mode: two torch envs + the cache: $(du -sch "$UV_CACHE_DIR" "$TMP/$mode-a" "$TMP/$mode-b" | tail -1 | cut -f1)"
done
