"""One MBPO (or continued-SFT) variant from a base run, then a short eval: the unit of the
variant sweep in reports/gpu/mbpo_variants.md.

    python3 benchmarks/mbpo_variants.py BASE_RUN OUT mbpo|sft DEVICE THREADS [section.key=value ...]

Starts from the quickstart's stage config (`QuickstartConfig().mbpo` or `.base`), applies the
overrides, trains from BASE_RUN, evaluates the embedded suite (image + blind probes, first 400
items a task) and writes OUT/row.json: per task (counter-prior accuracy, prior-consistent
accuracy, visual reliance image - blind), the mining statistics and the composition of the mined
pairs by (kind, prior) — the diagnosis of why MBPO does or does not help. `mbpo_variants.sh`
runs a file of variants in parallel processes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from mbpo_bench.config import RuntimeSection
from mbpo_bench.evaluation.api import run_eval
from mbpo_bench.evaluation.config import EvalConfig, ProbeConfig
from mbpo_bench.quickstart import QuickstartConfig


def set_path(obj: Any, key: str, raw: str) -> None:
    """obj.a.b = raw, converted to the current field's type (a None field: int, float or str)."""
    *parents, name = key.split(".")
    for part in parents:
        obj = getattr(obj, part)
    current = getattr(obj, name)
    value: Any = raw
    if raw == "None":
        value = None
    elif isinstance(current, bool):
        value = raw in ("1", "true", "True")
    elif isinstance(current, int):
        value = int(raw)
    elif isinstance(current, float):
        value = float(raw)
    setattr(obj, name, value)


def train(base: str, out: Path, kind: str, device: str, threads: int, overrides: list[str]) -> None:
    qs = QuickstartConfig()
    cfg: Any = copy.deepcopy(qs.mbpo if kind == "mbpo" else qs.base)
    cfg.model = base
    for item in overrides:
        key, raw = item.split("=", 1)
        set_path(cfg, key, raw)
    cfg.runtime = dataclasses.replace(
        cfg.runtime, device=device, threads=threads, progress=False, tensorboard=False
    )
    if kind == "mbpo":
        from mbpo_bench.trainers.mbpo import run_mbpo

        run_mbpo(cfg, out / "train", overwrite=True)
    else:
        from mbpo_bench.trainers.sft import run_sft

        run_sft(cfg, out / "train", overwrite=True)


def pair_composition(pairs: Path) -> dict[str, int]:
    import pandas as pd

    from mbpo_bench.data.registry import training_items

    label = {
        it.doc_id: f"{it.meta['kind']}/{it.meta['prior']}" for it in training_items("embedded")
    }
    return dict(sorted(Counter(label[d] for d in pd.read_parquet(pairs).doc_id).items()))


def main(argv: list[str]) -> None:
    base, out, kind, device, threads = argv[0], Path(argv[1]), argv[2], argv[3], int(argv[4])
    torch.set_num_threads(threads)
    start = time.time()
    train(base, out, kind, device, threads, argv[5:])
    row: dict[str, Any] = {"variant": " ".join(argv[5:]) or kind, "kind": kind,
                           "train_s": round(time.time() - start, 1)}  # fmt: skip
    ev = EvalConfig(model=str(out / "train"), tasks="embedded", output=str(out / "eval"),
                    limit=400, batch_size=64, runtime=RuntimeSection(device=device),
                    probes=ProbeConfig(names=["image", "blind"]))  # fmt: skip
    run_eval(ev, overwrite=True, progress=False)
    results = json.loads((out / "eval" / "results.json").read_text())
    for task, r in results["tasks"].items():
        m = r["probes"]["image"]["metrics"]
        row[task.replace("mbpo_embedded_", "")] = [
            round(m["acc_counter_prior"]["value"], 3),
            round(m["acc_prior_consistent"]["value"], 3),
            round(r["balance"]["visual_reliance_blind"]["value"], 3),
        ]
    stats = out / "train" / "pairs.stats.json"
    if stats.is_file():
        row["mining"] = json.loads(stats.read_text())
        row["pairs"] = pair_composition(out / "train" / "pairs.parquet")
    (out / "row.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
