"""Work-arounds for lmms-eval 0.7.3 in today's environments, each applied only where it breaks.

- `simple_evaluate` starts by patching `filelock._api.FileLockMeta` (to make nested
  `load_dataset` locks re-entrant). filelock 4 removed `filelock._api`, so with filelock >= 4
  every `simple_evaluate` call dies with "No module named 'filelock._api'" before evaluating
  anything. Our tasks build their datasets in memory (`process_docs`), never nesting dataset
  locks, so we mark the patch as applied and skip it when (and only when) that module is gone.
"""

from __future__ import annotations

import importlib.util


def skip_incompatible_filelock_patch() -> bool:
    """Return True if lmms-eval's filelock patch had to be skipped (filelock >= 4)."""
    if importlib.util.find_spec("filelock._api") is not None:
        return False
    from lmms_eval import evaluator

    evaluator._enable_reentrant_filelocks._patched = True  # type: ignore[attr-defined]
    return True
