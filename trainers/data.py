"""Training data: task items -> prompts, and the preference dataset that mining writes.

The preference dataset is a parquet table, one row per mined pair, readable by pandas and by DPO:
image reference (`image_path`), `question`, `chosen`, `rejected`, the item's `target`, `verifier`
and `options` (so GRPO can verify extra online samples for the same prompt), the pair's `iig`,
the negative `source` (pgd / noise / blind) and the attack statistics. Images stay files; rows
refer to them by path, so a dataset is small and the clean image is always the one trained on.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.data.items import TaskItem
from mbpo_bench.errors import UserError, exception_line
from mbpo_bench.models.protocol import Prompt

if TYPE_CHECKING:
    from PIL import Image

PAIR_COLUMNS_REQUIRED = ("question", "chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    task: str
    doc_id: str
    image_path: str | None
    question: str
    target: str
    verifier: str
    options: tuple[str, ...]
    chosen: str
    rejected: str
    iig: float = float("nan")
    source: str = "pgd"
    rejected_parsed: str | None = None
    attack_logp_before: float = float("nan")
    attack_logp_after: float = float("nan")
    attack_linf: float = float("nan")
    attack_steps: int = 0

    def as_item(self) -> TaskItem:
        return TaskItem(
            task=self.task,
            doc_id=self.doc_id,
            question=self.question,
            target=self.target,
            verifier=self.verifier,
            image_path=Path(self.image_path) if self.image_path else None,
            options=self.options,
        )


def item_image(item: TaskItem) -> Image.Image | None:
    """The item's image at its own resolution: the model's input protocol does the geometry."""
    return item.load_image() if item.image_path is not None else None


def item_prompts(items: Sequence[TaskItem]) -> list[Prompt]:
    """One prompt per item, with its image decoded as stored (no resize here)."""
    return [Prompt(item.question, item_image(item)) for item in items]


def load_items(
    data: str, *, split: str = "train", limit: int | None = None, skip_bad_items: bool = False
) -> list[TaskItem]:
    """Task items from task names (comma-separated) or a file, via the data registry.

    With `skip_bad_items` every image is decoded once here and the items whose image is missing
    or broken are dropped (one line on stderr says how many); without it a bad image stops the
    run when a step first reads it, naming the item."""
    import sys

    from mbpo_bench.data.registry import training_items

    items = list(training_items(data, split=split, limit=limit))
    if not items:
        raise UserError(f"no training items in '{data}' (split {split}) — check --data")
    if not skip_bad_items:
        return items
    from mbpo_bench.data.images import BadImageError, load_rgb

    bad: dict[Path, str] = {}
    for path in dict.fromkeys(it.image_path for it in items if it.image_path is not None):
        try:
            load_rgb(path)
        except BadImageError as exc:
            bad[path] = str(exc)
    dropped = [(it, bad[it.image_path]) for it in items if it.image_path in bad]
    good = [it for it in items if it.image_path not in bad]
    if dropped:
        first, reason = dropped[0]
        print(
            f"skipped {len(dropped)} of {len(items)} training items with a bad image "
            f"(first: {first.task}/{first.doc_id}: {reason})",
            file=sys.stderr,
        )
    if not good:
        raise UserError(
            f"every training item in '{data}' has a bad image — fix the images, or check --data"
        )
    return good


def is_preference_file(data: str) -> bool:
    return data.endswith(".parquet") and Path(data).is_file()


def write_pairs(path: Path, pairs: Sequence[PreferencePair]) -> None:
    """Write the preference dataset atomically (parquet)."""
    import pandas as pd

    from mbpo_bench.runs import write_atomic

    names = [f.name for f in fields(PreferencePair)]
    rows = [{**asdict(p), "options": list(p.options)} for p in pairs]
    frame = pd.DataFrame(rows, columns=names)
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    write_atomic(path, buf.getvalue())


def _value(row: Mapping[Hashable, Any], name: str, default: Any) -> Any:
    """row[name], or `default` when the column is absent or the cell is null/NaN."""
    value = row.get(name, default)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return value


def read_pairs(path: Path) -> list[PreferencePair]:
    """Read a preference dataset; a missing required column names the column and the fix."""
    import pandas as pd

    if not path.is_file():
        raise UserError(f"preference dataset not found: {path} — run `mbpo-bench mine` first")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError: no shared base worth naming
        raise UserError(
            f"preference dataset {path} cannot be read as parquet ({exception_line(exc, 120)}) "
            "— write it again with `mbpo-bench mine`, or pass another file"
        ) from None
    missing = [c for c in PAIR_COLUMNS_REQUIRED if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path} lacks the column(s) {', '.join(missing)} — a preference dataset needs "
            f"{', '.join(PAIR_COLUMNS_REQUIRED)} (write it with `mbpo-bench mine`)"
        )
    defaults = {f.name: f.default for f in fields(PreferencePair)}
    optional = ("iig", "source", "rejected_parsed", "attack_logp_before", "attack_logp_after",
                "attack_linf", "attack_steps")  # fmt: skip
    pairs = []
    for i, row in enumerate(frame.to_dict("records")):
        options = _value(row, "options", ())
        pairs.append(
            PreferencePair(
                task=str(_value(row, "task", "pairs")),
                doc_id=str(_value(row, "doc_id", i)),
                image_path=_value(row, "image_path", None),
                question=str(row["question"]),
                target=str(_value(row, "target", row["chosen"])),
                verifier=str(_value(row, "verifier", "short_word")),
                options=tuple(str(o) for o in options),
                chosen=str(row["chosen"]),
                rejected=str(row["rejected"]),
                **{k: _value(row, k, defaults[k]) for k in optional},
            )
        )
    return pairs
