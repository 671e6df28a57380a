"""Input preparation off the critical path: batch k+1's images go through the protocol's geometric
step in DataLoader worker processes while the model runs batch k.

What bounded the earlier single-thread prefetch (measured on the H200: it gave nothing): the step
is a Python call chain (PIL decode, the checkpoint's image processor, numpy / torch glue) that
holds the GIL for most of its 28-38 ms an image, and the main thread needs the GIL to launch the
model's kernels (an eager 7B prefill is thousands of Python-dispatched ops). A thread therefore
took turns with the launcher instead of running beside it: the GPU waited either way. Processes
have their own interpreter: the main process only maps the finished tensors (shared memory), the
pin-memory thread copies them into page-locked memory, and the host-to-device copy is
non-blocking (`images_to_tensor`).

Decisions:
- A work unit is a chunk of `CHUNK` prompts, not a whole batch, so the first batch is prepared by
  all workers at once (a 128-prompt batch on one worker would be a 4 s wait before the model
  starts); chunks come back in order and are regrouped per batch.
- Workers are forked (the dataset holds the adapter, whose model must not be pickled); they only
  run CPU code (never CUDA), which is what makes forking a CUDA process safe. torch sets one
  intra-op thread per worker.
- `workers=0` is not the loader at all: the batch runs exactly as before. It is the default on
  every device. On the H200 (`reports/perf/h200/eval_*_640x480.md`, 128 in-memory random
  640x480 images at batch 64) 8 workers were 6-8% slower than preparing in the main process:
  LLaVA-7B shape prefill-choice 43.06 vs 45.86 samples/s, Qwen2-VL-7B 37.08 vs 40.42. There the
  image step is a small part of a batch's time, and the workers' own costs (forking, sending
  the chunks back, the pin-memory thread; not profiled which one) outweighed what they hid. Workers
  may pay where the image step is heavy: large photos, images decoded from disk (JPEG), many
  images a prompt. `--set input_workers=N` turns them on; `available_workers()` is the count a
  machine can spare.
- The worker does only the image step (and the item's image decode): the prompt, template and
  tokens stay in the main process, so there is one code path for text and one for every probe.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from mbpo_bench.evaluation.config import EvalConfig
    from mbpo_bench.evaluation.plan import Batch, TaskPlan
    from mbpo_bench.models.protocol import Prompt, VisionLanguageModel

J = TypeVar("J")
T = TypeVar("T")
CHUNK = 8  # prompts a worker prepares per work unit
MAX_WORKERS = 8


def default_workers(device: str, requested: int | None = None) -> int:
    """Worker processes for input preparation: `requested` if given, else 0 on every device (in
    the main process; measured faster on the H200, see the module docstring)."""
    if requested is not None:
        if requested < 0:
            from mbpo_bench.errors import UserError

            raise UserError(
                f"input_workers {requested} is negative — pass 0 (prepare inputs in the "
                "main process) or a positive worker count"
            )
        return requested
    return 0


def available_workers() -> int:
    """The workers this machine can spare beside the model's process: min(MAX_WORKERS, cores -
    2) (8 on the H200's 16 cores; what `bench_eval_gpu.py` runs its worker rows with)."""
    return max(0, min(MAX_WORKERS, (os.cpu_count() or 1) - 2))


class _Jobs(Generic[J, T]):
    """A map-style dataset over `jobs`: item k is `prepare(jobs[k])` (run in a worker)."""

    def __init__(self, jobs: Sequence[J], prepare: Callable[[J], T]) -> None:
        self.jobs = jobs
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, k: int) -> T:
        return self.prepare(self.jobs[k])


def _identity(x: Any) -> Any:
    return x


def prefetched(
    jobs: Sequence[J],
    prepare: Callable[[J], T],
    *,
    workers: int,
    pin: bool = False,
    ahead: int = 2,
) -> Iterator[T]:
    """`prepare(job)` for every job, in order; with `workers` > 0 computed in forked worker
    processes, about `ahead` jobs per worker in advance, outputs pinned when `pin`."""
    if workers <= 0 or len(jobs) <= 1:
        yield from (prepare(j) for j in jobs)
        return
    import multiprocessing

    from torch.utils.data import DataLoader

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked after the tokenizer ran
    dataset: Any = _Jobs(jobs, prepare)  # map-style: __len__ and __getitem__
    loader: Any = DataLoader(
        dataset,
        batch_size=None,  # a job is already a unit of work; no collation
        shuffle=False,
        num_workers=min(workers, len(jobs)),
        collate_fn=_identity,
        pin_memory=pin,
        prefetch_factor=max(2, ahead),
        multiprocessing_context=multiprocessing.get_context("fork"),
    )
    yield from loader


@dataclass
class PreparedPrompts:
    """One chunk of a batch's prompts with their images prepared (`PreparedImage`)."""

    index: int  # the batch's position in the caller's work list
    prompts: list[Any]  # ProbeInput (generation probes) or (with-image, null) Prompt pairs (iig)

    def pin_memory(self) -> PreparedPrompts:
        return PreparedPrompts(self.index, [_pin(p) for p in self.prompts])


def _pin(obj: Any) -> Any:
    """`obj` with its PreparedImage pixels pinned (ProbeInput, Prompt or a tuple of them)."""
    import dataclasses

    from mbpo_bench.models.prepared import PreparedImage

    if isinstance(obj, PreparedImage):
        return obj.pin_memory()
    if isinstance(obj, tuple):
        return tuple(_pin(x) for x in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _pin(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return dataclasses.replace(obj, **changes)
    return obj


def prepared_prompt(vlm: VisionLanguageModel, prompt: Prompt) -> Prompt:
    """`prompt` with its image through the protocol's step (`PreparedImage`); text-only as is."""
    import dataclasses

    from mbpo_bench.models.prepared import PreparedImage, prepare_image

    image = prompt.image
    if image is None or isinstance(image, PreparedImage):
        return prompt
    ready = prepare_image(vlm.geometry, image)  # type: ignore[attr-defined]
    return dataclasses.replace(prompt, image=ready)  # type: ignore[arg-type]


def prepared(vlm: VisionLanguageModel, x: Any) -> Any:
    """`x` (a `Prompt`, a `ProbeInput`, or a tuple of them) with its images prepared."""
    import dataclasses

    from mbpo_bench.models.protocol import Prompt

    if isinstance(x, tuple):
        return tuple(prepared(vlm, y) for y in x)
    if isinstance(x, Prompt):
        return prepared_prompt(vlm, x)
    return dataclasses.replace(x, prompt=prepared_prompt(vlm, x.prompt))


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def prepared_entries(
    vlm: VisionLanguageModel,
    sizes: Sequence[int],
    build: Callable[[int, int, int], list[Any]],
    *,
    workers: int,
) -> Iterator[list[Any]]:
    """Per entry k (of `sizes[k]` prompts), in order: `build(k, start, stop)`'s prompts with
    their images prepared, built and prepared CHUNK prompts at a time in `workers` processes
    (about two entries ahead), pinned when the model is on CUDA."""
    jobs = [(k, start, stop) for k, n in enumerate(sizes) for start, stop in _chunks(n, CHUNK)]

    def prepare(job: tuple[int, int, int]) -> PreparedPrompts:
        k, start, stop = job
        return PreparedPrompts(k, [prepared(vlm, x) for x in build(k, start, stop)])

    ahead = max(2, math.ceil(2 * max(sizes, default=1) / (CHUNK * max(1, workers))))
    pin = str(vlm.device).startswith("cuda")
    current, parts = 0, list[Any]()
    for chunk in prefetched(jobs, prepare, workers=workers, pin=pin, ahead=ahead):
        while chunk.index != current:  # an entry of no prompts stays empty
            yield parts
            current, parts = current + 1, []
        parts += chunk.prompts
    while current < len(sizes):
        yield parts
        current, parts = current + 1, []


def batch_inputs(
    vlm: VisionLanguageModel,
    work: Sequence[tuple[TaskPlan, Batch]],
    config: EvalConfig,
    *,
    workers: int,
) -> Iterator[list[Any] | None]:
    """Per entry of `work`, in order: its prompts with prepared images (the same list
    `batches.batch_prompts` builds), or None with `workers` 0 (the batch builds its own)."""
    if workers <= 0:
        yield from (None for _ in work)
        return
    from mbpo_bench.evaluation.batches import batch_prompts

    def build(k: int, start: int, stop: int) -> list[Any]:
        plan, batch = work[k]
        return batch_prompts(vlm, plan, batch, config, start, stop)

    sizes = [len(b.doc_ids) for _, b in work]
    yield from prepared_entries(vlm, sizes, build, workers=workers)
