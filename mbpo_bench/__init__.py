"""mbpo-bench: does the model look at the image? Evaluate and align LMMs for modality balance.

Importing the package is cheap on purpose: torch, transformers and lmms-eval are imported inside
the functions that need them, so `mbpo-bench --help` and the verifiers start in a fraction of a
second. `checkout` lets `python -m pytest` / `python -m mbpo_bench` work from the repository root.
"""

from mbpo_bench import checkout as _checkout

_checkout.install()

__version__ = "0.1.0"
