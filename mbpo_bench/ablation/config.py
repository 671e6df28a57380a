"""The ablation's settings and its arms: method.md's factorial plus the baselines, as data.

Arms (`ARMS`, in report order):
- `sft`, continued SFT on the same training tasks (the control a skeptic asks for first);
- `dpo-pgd`, DPO on the PGD pairs that the full MBPO arm also trains on (IIG filter on);
- `grpo`, plain GRPO on online prompts only;
- `mbpo-<source>-<iig|noiig>-<online|offline>`, the 3 x 2 x 2 factorial: where the rejected
  answers come from (`mining.source` pgd | noise | blind), whether mining keeps only high-IIG
  candidates (`mining.iig_filter`), and whether batches also hold online groups. "offline" is
  MBPO's GRPO on the mined pairs alone (`hybrid.offline_ratio=1.0`); "online" keeps the
  configured mix (`hybrid.offline_ratio`, default 0.5). `mbpo-pgd-iig-online` is MBPO itself;
- matched controls and the twin-pair variant (issue 17): `sft-mined`, SFT on the pairs the full
  MBPO arm mines (their chosen answers) with MBPO's learning rate and schedule; `mbpo-twins`,
  MBPO with `hybrid.twins` (candidates: every counter-prior item that has a prior twin,
  `mining.limit=null`, any flip kept, `mining.keep=wrong`, as the quickstart's variant; each
  mined item trained with its twin); `sft-twins`, SFT on those same items and twins, matched
  likewise; `grpo-mined`, GRPO on the full MBPO arm's online prompts (its mined items) with no
  offline negatives (MBPO with `hybrid.offline_ratio=0`); `dpo-mined` and `dpo-mdpo`, DPO and
  DPO + mDPO's conditional term on the full MBPO arm's pairs; `sft-balanced`, SFT on the mined
  items plus as many question-matched prior-consistent training items. Every control takes the
  matched MBPO arm's mining, steps, batch size and lr schedule (plan.py); its learning rate is
  MBPO's unless `lrs` / `lr_from` choose one (on `dev`, see `AblationConfig`).

An arm is only what distinguishes it: the method and the overrides that define its factors.
Everything shared (budget, seeds, the user's `key=value` settings) is applied in `plan.py`, so
that the arms differ in exactly their factors. `--arms` takes names or shell-style patterns
(`mbpo-pgd-*`); a name that matches nothing is an error with the closest names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

from mbpo_bench.errors import UserError, did_you_mean

SOURCES = ("pgd", "noise", "blind")
IIG_LEVELS = (True, False)
ONLINE_LEVELS = (True, False)
# "online off" is the definition of the factor, not a tunable: every group is a mined pair.
OFFLINE_ONLY_RATIO = 1.0
DEFAULT_PROBES = ("image", "blind", "mismatched")


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison: a training method and the overrides that define it."""

    name: str
    method: str  # sft | dpo | grpo | mbpo (the `mbpo-bench train` method)
    overrides: tuple[str, ...] = ()
    source: str | None = None  # negatives: pgd | noise | blind (arms that mine)
    iig_filter: bool | None = None
    online: bool | None = None
    # SFT arms on mined pairs: the MBPO overrides whose mining they share (and whose lr and
    # schedule they copy, so the control is matched)
    miner: tuple[str, ...] = ()
    twins: bool = False  # the twin-pair variant (outside the 3 x 2 x 2 factorial)
    control: bool = False  # a matched control (issue 17), outside the factorial
    lr: float | None = None  # this arm's learning rate (lr grid or chosen on dev); None: default

    @property
    def factorial(self) -> bool:
        """One of the 12 MBPO arms of method.md's factorial."""
        return self.method == "mbpo" and not self.twins and not self.control

    @property
    def mines(self) -> bool:
        """Whether the arm trains on mined pairs (mining runs once per source/filter/seed)."""
        return self.source is not None

    def factors(self) -> dict[str, str]:
        """Factor levels for the report ('—' where the factor does not apply)."""

        def level(value: bool | None, on: str, off: str) -> str:
            return "—" if value is None else (on if value else off)

        return {
            "negatives": self.source or "—",
            "IIG filter": level(self.iig_filter, "on", "off"),
            "online": level(self.online, "on", "off"),
        }


def _mbpo_arm(source: str, iig: bool, online: bool) -> Arm:
    name = f"mbpo-{source}-{'iig' if iig else 'noiig'}-{'online' if online else 'offline'}"
    overrides = [f"mining.source={source}", f"mining.iig_filter={'true' if iig else 'false'}"]
    if not online:
        overrides.append(f"hybrid.offline_ratio={OFFLINE_ONLY_RATIO}")
    return Arm(name, "mbpo", tuple(overrides), source=source, iig_filter=iig, online=online)


def all_arms() -> tuple[Arm, ...]:
    """The baselines, then the factorial (full MBPO first)."""
    baselines = (
        Arm("sft", "sft"),
        Arm("dpo-pgd", "dpo", ("mining.source=pgd", "mining.iig_filter=true"), "pgd", True),
        Arm("grpo", "grpo", online=True),
    )
    factorial = tuple(
        _mbpo_arm(source, iig, online)
        for source in SOURCES
        for iig in IIG_LEVELS
        for online in ONLINE_LEVELS
    )
    pgd_iig = ("mining.source=pgd", "mining.iig_filter=true")
    # the quickstart's twin variant (quickstart_config._mbpo_twins): every counter-prior item
    # with a twin is a candidate, and any flip is kept (its twin guards against a text shift)
    twins = (*pgd_iig, "hybrid.twins=true", "mining.keep=wrong", "mining.limit=null")
    no_offline = ("hybrid.offline_ratio=0.0", "hybrid.online_pool=mined")
    matched = (
        Arm("sft-mined", "sft", (), "pgd", True, miner=pgd_iig, control=True),
        Arm("grpo-mined", "mbpo", (*pgd_iig, *no_offline), "pgd", True, True, control=True),
        Arm("dpo-mined", "dpo", (), "pgd", True, miner=pgd_iig, control=True),
        Arm("dpo-mdpo", "dpo", ("mdpo_weight=1.0",), "pgd", True, miner=pgd_iig, control=True),
        Arm("sft-balanced", "sft", ("balanced=true",), "pgd", True, miner=pgd_iig, control=True),
        Arm("mbpo-twins", "mbpo", twins, "pgd", True, True, twins=True),
        Arm("sft-twins", "sft", ("twins=true",), "pgd", True, miner=twins, control=True),
    )
    return baselines + factorial + matched


ARMS: tuple[Arm, ...] = all_arms()


def select_arms(patterns: Sequence[str] | None, arms: Sequence[Arm] = ARMS) -> list[Arm]:
    """The arms named by `patterns` (names or fnmatch patterns), in catalogue order.

    None or an empty list selects every arm; a pattern that matches no arm raises with the
    closest names.
    """
    if not patterns:
        return list(arms)
    names = [a.name for a in arms]
    chosen: set[str] = set()
    for raw in patterns:
        pattern = raw.strip()
        if not pattern:
            continue
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise UserError(
                f"unknown arm '{pattern}'{did_you_mean(pattern, names)} — choose from: "
                f"{', '.join(names)} (shell patterns such as 'mbpo-pgd-*' work too)"
            )
        chosen.update(hits)
    if not chosen:
        raise UserError("--arms selects no arm — pass arm names separated by commas")
    return [a for a in arms if a.name in chosen]


@dataclass
class AblationConfig:
    """`mbpo-bench ablate`: saved as `<output>/ablation.yaml`, reusable with `--config`.

    `overrides` are training settings in `train`'s syntax, `section.key=value`, applied to every
    arm whose config has that key; `METHOD:section.key=value` (METHOD in sft, dpo, grpo, mbpo)
    applies to that method only, and `eval:key=value` to the evaluations. The budget
    (`steps`, `batch_size`: optimizer steps, and per step SFT samples, DPO pairs or GRPO/MBPO
    prompt groups) is the same for every arm and set here, not by overrides.
    """

    model: str = ""
    data: str = "embedded"  # training tasks (and mining candidates); their train split
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    arms: list[str] | None = None  # names or patterns; None = every arm
    steps: int = 200
    batch_size: int = 8
    eval_tasks: str | None = None  # None = the training tasks, on their eval split
    eval_limit: int | None = None  # first N items of each eval task
    probes: list[str] = field(default_factory=lambda: list(DEFAULT_PROBES))
    eval_base: bool = True  # also evaluate the starting model once, as the reference row
    overrides: list[str] = field(default_factory=list)
    # learning-rate grid: every selected arm runs once per value (`<arm>@lr<value>`); meant for
    # a dev ablation (`eval:split=dev`), whose report then writes lr_choice.json: per arm, the
    # lr with the best mean pair accuracy over seeds and tasks
    lrs: list[float] | None = None
    # a finished dev ablation with `lrs`: each arm it tuned trains at the lr chosen there (the
    # test ablation; the choice never looks at test)
    lr_from: str | None = None

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat a seed: {self.seeds}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError("eval_limit must be >= 1")
        if self.lrs is not None and (not self.lrs or min(self.lrs) <= 0):
            raise ValueError(f"lrs must be positive learning rates, got {self.lrs}")
        if self.lrs is not None and len(set(self.lrs)) != len(self.lrs):
            raise ValueError(f"lrs repeat a learning rate: {self.lrs}")  # a run twice, one name
        if self.lrs and self.lr_from:
            raise ValueError("lrs (a grid, on dev) and lr_from (the dev choice) exclude each other")
