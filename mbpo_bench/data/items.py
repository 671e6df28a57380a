"""Task items: the unit that evaluation probes and trainers consume.

Every close-ended task hands out `TaskItem`s: evaluation turns them into prompts under each probe;
GRPO uses them as online prompts with the verifier as reward; mining uses them as candidates for
hard negatives. `meta` carries task-specific labels used by metrics (for the embedded benchmark:
`prior` = "consistent" | "counter", `kind`, `negative_split`; for POPE: `category`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class TaskItem:
    task: str
    doc_id: str
    question: str  # the full prompt text (task prompt template already applied)
    target: str  # reference answer
    verifier: str  # name in mbpo_bench.tasks.verifiers.VERIFIERS
    image_path: Path | None = None
    options: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def load_image(self, size: int | None = None) -> Image.Image:
        """Decode the item's image as RGB (resized to `size` square when given)."""
        from mbpo_bench.data.images import load_rgb

        if self.image_path is None:
            raise ValueError(f"item {self.task}/{self.doc_id} has no image")
        return load_rgb(self.image_path, size=size, item=f"{self.task}/{self.doc_id}")
