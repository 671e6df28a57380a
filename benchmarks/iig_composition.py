"""Which items IIG selects, by prior, for a quickstart base: the check behind the
"IIG needs an in-distribution null" finding in reports/gpu/mbpo_variants.md.

    python benchmarks/iig_composition.py 0.1      # base SFT with 10% text-only samples
    python benchmarks/iig_composition.py 0.0      # the quickstart's base

Builds (or takes from the cache) the quickstart base with `base.blind_fraction` set, then on 1024
training candidates prints how often the model's text-only answer is the item's prior answer, and
how many of the counter-prior candidates fall in the top 10 / 20 / 50% of IIG under the text-only
and the mismatched-image null.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
from mbpo_bench.trainers.data import item_prompts
from mbpo_bench.trainers.mining import candidate_pool

from mbpo_bench.data.registry import training_items
from mbpo_bench.modality.iig import compute_iig
from mbpo_bench.models.loading import load_model
from mbpo_bench.models.protocol import Prompt
from mbpo_bench.quickstart import QuickstartConfig, build_base


def main(blind_fraction: float) -> None:
    torch.set_num_threads(2)
    config = QuickstartConfig()
    config.base.blind_fraction = blind_fraction
    base, info = build_base(config, Path(tempfile.mkdtemp(prefix="iig_composition_")))
    print(f"base {base} ({info})")
    vlm = load_model(str(base / "final" / "model"), device="cpu")
    items = candidate_pool(training_items("embedded"), 1024, 0)
    prompts = item_prompts(items)
    blind = vlm.generate([Prompt(p.text, None) for p in prompts], max_new_tokens=3, batch_size=128)
    agree = Counter(
        (it.meta["prior"], b[0].strip() == it.meta.get("prior_answer"))
        for it, b in zip(items, blind, strict=True)
    )
    print("text-only answer == prior answer (prior, equal): count", dict(sorted(agree.items())))
    n_counter = sum(1 for it in items if it.meta["prior"] == "counter")
    for null in ("text", "mismatched"):
        values = compute_iig(vlm, prompts, [it.target for it in items], null=null, batch_size=128)
        order = torch.argsort(values, descending=True).tolist()
        for fraction in (0.1, 0.2, 0.5):
            top = order[: int(fraction * len(items))]
            hits = sum(1 for i in top if items[i].meta["prior"] == "counter")
            print(f"null {null}: top {fraction:.0%} ({len(top)}) holds {hits}/{n_counter} "
                  "counter-prior candidates")  # fmt: skip


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.0)
