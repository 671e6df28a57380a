"""The compiled-layers candidate fix as the benchmarks use it: loading it, and what dynamo did.

`compiled_layers(vlm, *, enabled, backend, vision)` (mbpo_bench.models.compile) torch.compiles each
decoder layer for full-sequence passes. The benchmarks measure it before/after in one process, so
both need the same two things: the context manager, or one clear line saying why it is missing
(only when a compiled row or variant was asked for: the eager rows run regardless), and dynamo's
counters around the compiled work. Those counters tell a compile that worked (a few graphs, no
breaks) from one that silently fell back to eager (a frame over torch._dynamo.config's
recompile_limit runs eagerly with only a log warning), which timings alone cannot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MODULE = "mbpo_bench.models.compile"


def load_compiled_layers() -> Callable[..., Any]:
    """`compiled_layers` from mbpo_bench.models.compile; RuntimeError (one line) when missing."""
    import importlib

    try:
        module = importlib.import_module(MODULE)
    except ImportError as exc:
        raise RuntimeError(
            f"compiled variant not run: {MODULE} is not importable here ({exc}) — it provides "
            "compiled_layers(vlm, enabled=, backend=, vision=); run without the compile option"
        ) from exc
    fn = getattr(module, "compiled_layers", None)
    if fn is None:
        raise RuntimeError(f"compiled variant not run: {MODULE} has no compiled_layers")
    return fn  # type: ignore[no-any-return]


def dynamo_snapshot() -> dict[str, int]:
    """Running totals of dynamo's counters (frames compiled / ok, graphs, graph breaks)."""
    from torch._dynamo.utils import counters

    return {
        "frames": int(counters["frames"]["total"]),
        "frames ok": int(counters["frames"]["ok"]),
        "unique graphs": int(counters["stats"]["unique_graphs"]),
        "graph breaks": int(sum(counters["graph_break"].values())),
    }


def dynamo_delta(before: dict[str, int]) -> str:
    """What dynamo did since `before`, as one phrase ("frames +0": nothing was compiled)."""
    now = dynamo_snapshot()
    return "dynamo: " + ", ".join(f"{k} +{now[k] - before.get(k, 0)}" for k in now)
