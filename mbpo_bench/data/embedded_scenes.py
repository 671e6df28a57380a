"""Scenes, priors and questions of the embedded benchmark (pure Python, seeded `random.Random`).

The world has three priors, each tied to question text so that a text-only model can learn it:
- usual colour: every shape has one colour it usually has ("What color is the circle?" -> red),
- co-occurrence: shapes come in pairs that usually appear together ("There is a circle. Is there
  a square?" -> yes when square is circle's partner, no otherwise),
- usual count: every shape usually appears a fixed number of times ("How many stars?" -> 2).
A training scene follows all three priors with probability `prior_strength` (an anchor shape in
its usual colour and count plus its partner) and is otherwise random; each task asks one question
about the anchor of every training scene, so the tasks share training images. Evaluation items come
in twin pairs (generator version 3, `eval_pair`): a counter-prior item and its prior twin, the
same scene with only the asked attribute set back to the prior, asked with the same text, so
pair accuracy (both right) cannot be raised without looking. Counter-prior training items get a
twin too (`twin_scene`), for training that contrasts the two images. Existence negatives are
labelled the POPE way: `adversarial` = the absent partner of the asked-about present shape
(counter-prior), `random` / `popular` = an absent non-partner (`popular`: the non-partner most
frequent in the training split).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mbpo_bench.data.embedded_config import EmbeddedConfig

KINDS = ("existence", "color", "count")


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    cell: int
    size: float  # side as a fraction of the patch
    dx: float  # offset of the centre inside the cell, as a fraction of the free margin
    dy: float


@dataclass(frozen=True)
class World:
    usual_color: dict[str, str]
    usual_count: dict[str, int]
    partner: dict[str, str]

    @classmethod
    def from_config(cls, config: EmbeddedConfig) -> World:
        rng = random.Random(f"world-{config.seed}")
        shapes = list(config.shapes)
        colors = list(config.colors)
        rng.shuffle(colors)
        usual_color = {s: colors[i % len(colors)] for i, s in enumerate(shapes)}
        order = shapes[:]
        rng.shuffle(order)
        partner = {}
        for a, b in zip(order[::2], order[1::2], strict=True):
            partner[a], partner[b] = b, a
        counts = [config.usual_counts[i % len(config.usual_counts)] for i in range(len(shapes))]
        rng.shuffle(counts)
        return cls(usual_color, dict(zip(shapes, counts, strict=True)), partner)

    def to_dict(self) -> dict[str, Any]:
        return {"usual_color": self.usual_color, "usual_count": self.usual_count,
                "partner": self.partner}  # fmt: skip


def place(
    rng: random.Random, config: EmbeddedConfig, groups: list[tuple[str, str, int]]
) -> tuple[Obj, ...]:
    """Put `count` objects of each (shape, colour, count) group on distinct grid cells."""
    total = sum(count for _, _, count in groups)
    cells = rng.sample(range(config.grid * config.grid), total)
    low, high = config.size_range
    objs, k = [], 0
    for shape, color, count in groups:
        for _ in range(count):
            size = rng.uniform(low, high)
            objs.append(Obj(shape, color, cells[k], size, rng.uniform(-1, 1), rng.uniform(-1, 1)))
            k += 1
    return tuple(objs)


def _random_groups(
    rng: random.Random,
    config: EmbeddedConfig,
    first: tuple[str, str, int],
    n: int,
    exclude: frozenset[str] = frozenset(),
) -> list[tuple[str, str, int]]:
    """`first` plus n - count(first) more objects of random shapes outside `exclude`."""
    extra: Counter[str] = Counter()
    allowed = [s for s in config.shapes if s != first[0] and s not in exclude]
    for _ in range(max(0, n - first[2])):
        extra[rng.choice(allowed)] += 1
    return [first] + [(s, rng.choice(config.colors), c) for s, c in sorted(extra.items())]


def train_scene(
    rng: random.Random, config: EmbeddedConfig, world: World
) -> tuple[tuple[Obj, ...], str, bool]:
    """(objects, anchor shape, follows_prior) of one training scene."""
    anchor = rng.choice(config.shapes)
    if rng.random() < config.prior_strength:
        groups = [(anchor, world.usual_color[anchor], world.usual_count[anchor])]
        mate = world.partner[anchor]
        groups.append((mate, world.usual_color[mate], 1))
        return place(rng, config, groups), anchor, True
    n = rng.randint(config.min_objects, config.max_objects)
    count = rng.randint(1, n)
    groups = _random_groups(rng, config, (anchor, rng.choice(config.colors), count), n)
    return place(rng, config, groups), anchor, False


def color_options(
    rng: random.Random, config: EmbeddedConfig, answer: str, also: str | None = None
) -> tuple[str, ...]:
    """`answer` (and `also`, when given: a twin pair's other answer) plus random other colours,
    shuffled: both twins of a pair get the same options, so their text is identical."""
    must = [answer] if also in (None, answer) else [answer, also]
    others = [c for c in config.colors if c not in must]
    options = [*must, *rng.sample(others, config.n_color_options - len(must))]
    rng.shuffle(options)
    return tuple(options)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def question_row(
    kind: str,
    rng: random.Random,
    config: EmbeddedConfig,
    world: World,
    objs: tuple[Obj, ...],
    shape: str,
    query: str | None = None,
    options: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """The question of `kind` about `shape` (and `query` for existence) on a scene; colour
    `options` are drawn unless given (twins share theirs)."""
    present = Counter(o.shape for o in objs)
    shown: tuple[str, ...] = ()
    if kind == "existence":
        assert query is not None
        answer = "yes" if present[query] else "no"
        expected = "yes" if world.partner[shape] == query else "no"
        text = f"There is {article(shape)} {shape}. Is there {article(query)} {query}?"
    elif kind == "color":
        answer = next(o.color for o in objs if o.shape == shape)
        expected = world.usual_color[shape]
        text = f"What color is the {shape}?"
        shown = options or color_options(rng, config, answer)
    else:
        answer = str(present[shape])
        expected = str(world.usual_count[shape])
        text = f"How many {plural(shape)} are there?"
    return {
        "question": text, "answer": answer, "options": list(shown), "kind": kind,
        "prior": "consistent" if answer == expected else "counter", "prior_answer": expected,
        "shape": shape, "query": query, "n_objects": len(objs),
    }  # fmt: skip


def train_rows(
    rng: random.Random,
    config: EmbeddedConfig,
    world: World,
    objs: tuple[Obj, ...],
    anchor: str,
) -> dict[str, dict[str, Any]]:
    """One question per kind about the anchor of a training scene."""
    mate = world.partner[anchor]
    if rng.random() < 0.5:
        query = mate
    else:
        query = rng.choice([s for s in config.shapes if s not in (anchor, mate)])
    return {
        "existence": question_row("existence", rng, config, world, objs, anchor, query),
        "color": question_row("color", rng, config, world, objs, anchor),
        "count": question_row("count", rng, config, world, objs, anchor),
    }


def _free_cells(config: EmbeddedConfig, objs: tuple[Obj, ...]) -> list[int]:
    taken = {o.cell for o in objs}
    return [c for c in range(config.grid * config.grid) if c not in taken]


def _new_obj(rng: random.Random, config: EmbeddedConfig, shape: str, color: str, cell: int) -> Obj:
    low, high = config.size_range
    return Obj(shape, color, cell, rng.uniform(low, high), rng.uniform(-1, 1), rng.uniform(-1, 1))


def twin_scene(
    kind: str,
    objs: tuple[Obj, ...],
    shape: str,
    query: str | None,
    rng: random.Random,
    config: EmbeddedConfig,
    world: World,
) -> tuple[Obj, ...]:
    """The prior twin of a counter-prior scene: the same scene with ONLY the asked attribute set
    back to what the prior says (colour of `shape`; count of `shape`; presence of `query`).
    Every other object keeps its cell, size, offset and colour, so the two images differ in
    exactly the pixels the question is about, and the question text is the same."""
    if kind == "color":
        color = world.usual_color[shape]
        return tuple(dataclasses.replace(o, color=color) if o.shape == shape else o for o in objs)
    if kind == "count":
        mine = [o for o in objs if o.shape == shape]
        count = world.usual_count[shape]
        if len(mine) > count:
            drop = set(map(id, mine[count:]))
            return tuple(o for o in objs if id(o) not in drop)
        free = _free_cells(config, objs)
        cells = rng.sample(free, count - len(mine))
        return objs + tuple(_new_obj(rng, config, shape, mine[0].color, c) for c in cells)
    assert query is not None
    if any(o.shape == query for o in objs):  # counter "yes" (a non-partner present): remove it
        return tuple(o for o in objs if o.shape != query)
    cell = rng.choice(_free_cells(config, objs))  # counter "no" (the partner absent): add it
    return (*objs, _new_obj(rng, config, query, world.usual_color[query], cell))


def pair_cell(kind: str, counter_answer: str) -> str:
    """The cell a twin pair belongs to, named by its counter-prior answer where the answer
    matters for learnability (existence yes/no, each count), so a floor is found per cell."""
    return kind if kind == "color" else f"{kind}:{counter_answer}"


def eval_pair(
    kind: str,
    index: int,
    rng: random.Random,
    config: EmbeddedConfig,
    world: World,
    popularity: Counter[str],
) -> list[tuple[tuple[Obj, ...], dict[str, Any]]]:
    """One twin pair of `kind`: [(prior-consistent twin), (counter-prior item)].

    The counter-prior scene starts as a scene that follows the prior (the asked-about shape in
    its usual colour and count, plus its partner in its usual colour) with the asked attribute
    changed; its twin sets that attribute back (`twin_scene`). Both carry the same question text
    and options, so any policy that does not look at the image answers both alike and can get at
    most one of the two right: pair accuracy (both right) is exactly 0 for every deterministic
    text-only policy and 1/k^2 for uniform guessing over k answers. Existence alternates
    counter "yes" (a non-partner present; its twin is a "no" labelled random or popular, POPE's
    way) and counter "no" (the partner absent: POPE's adversarial negative).
    """
    shape = rng.choice(config.shapes)
    mate = world.partner[shape]
    usual_color, usual_count = world.usual_color[shape], world.usual_count[shape]
    color, count = usual_color, usual_count
    groups = [(mate, world.usual_color[mate], 1)]
    query: str | None = None
    non = [s for s in config.shapes if s not in (shape, mate)]
    if kind == "color":
        color = rng.choice([c for c in config.colors if c != usual_color])
    elif kind == "count":
        count = rng.choice([k for k in range(1, config.max_objects + 1) if k != usual_count])
    elif index % 2 == 0:  # counter "yes": a non-partner that is present after all
        query = rng.choice(non)
        groups.append((query, world.usual_color[query], 1))
    else:  # counter "no": the partner is absent
        query, groups = mate, []
    counter = place(rng, config, [(shape, color, count), *groups])
    twin = twin_scene(kind, counter, shape, query, rng, config, world)
    options = color_options(rng, config, color, usual_color) if kind == "color" else ()
    out = []
    for objs in (twin, counter):
        row = question_row(kind, rng, config, world, objs, shape, query, options)
        row["negative_split"] = None
        if kind == "existence" and row["answer"] == "no":
            popular = max(non, key=lambda s: (popularity[s], -config.shapes.index(s)))
            row["negative_split"] = (
                "adversarial" if query == mate else "popular" if query == popular else "random"
            )
        out.append((objs, row))
    cell = pair_cell(kind, out[1][1]["answer"])
    for _, row in out:
        row["pair_cell"] = cell
    assert [r["prior"] for _, r in out] == ["consistent", "counter"], (kind, out)
    assert out[0][1]["question"] == out[1][1]["question"]
    return out
