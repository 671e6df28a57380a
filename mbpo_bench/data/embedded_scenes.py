"""Scenes, priors and questions of the embedded benchmark (pure Python, seeded `random.Random`).

The world has three priors, each tied to question text so that a text-only model can learn it:
- usual colour: every shape has one colour it usually has ("What color is the circle?" -> red),
- co-occurrence: shapes come in pairs that usually appear together ("There is a circle. Is there
  a square?" -> yes when square is circle's partner, no otherwise),
- usual count: every shape usually appears a fixed number of times ("How many stars?" -> 2).
A training scene follows all three priors with probability `prior_strength` (an anchor shape in
its usual colour and count plus its partner) and is otherwise random; each task asks one question
about the anchor of every training scene, so the tasks share training images. Evaluation scenes are
built per task and per cell so that prior-consistent and counter-prior items are balanced (and,
for existence, yes and no are balanced within each cell). Existence negatives are labelled the
POPE way: `adversarial` = the absent partner of the asked-about present shape (counter-prior),
`random` = a uniformly drawn absent non-partner, `popular` = the absent non-partner most frequent
in the training split.
"""

from __future__ import annotations

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


def color_options(rng: random.Random, config: EmbeddedConfig, answer: str) -> tuple[str, ...]:
    others = [c for c in config.colors if c != answer]
    options = [answer, *rng.sample(others, config.n_color_options - 1)]
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
) -> dict[str, Any]:
    """The question of `kind` about `shape` (and `query` for existence) on a scene."""
    present = Counter(o.shape for o in objs)
    if kind == "existence":
        assert query is not None
        answer = "yes" if present[query] else "no"
        expected = "yes" if world.partner[shape] == query else "no"
        text = f"There is {article(shape)} {shape}. Is there {article(query)} {query}?"
        options: tuple[str, ...] = ()
    elif kind == "color":
        answer = next(o.color for o in objs if o.shape == shape)
        expected = world.usual_color[shape]
        text = f"What color is the {shape}?"
        options = color_options(rng, config, answer)
    else:
        answer = str(present[shape])
        expected = str(world.usual_count[shape])
        text = f"How many {plural(shape)} are there?"
        options = ()
    return {
        "question": text, "answer": answer, "options": list(options), "kind": kind,
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


def eval_item(
    kind: str,
    cell: str,
    index: int,
    rng: random.Random,
    config: EmbeddedConfig,
    world: World,
    popularity: Counter[str],
) -> tuple[tuple[Obj, ...], dict[str, Any]]:
    """One evaluation scene and question of `kind` in `cell` ("consistent" | "counter").

    Every evaluation scene starts as a training scene that follows the prior (the asked-about
    shape in its usual colour and count, plus its partner in its usual colour), and a
    counter-prior item changes ONLY the attribute its question asks about. So consistent and
    counter-prior items differ in nothing but the prior's answer: a model that reads the
    question's prior fails exactly the counter-prior half, and no other shift (e.g. shapes that
    a model recognises by their usual colour) separates the two cells. (A first version drew
    the rest of the scene at random; a tiny model then learned to find shapes by colour on the
    training scenes and failed both cells alike, which hid the language prior.)
    """
    consistent = cell == "consistent"
    shape = rng.choice(config.shapes)
    mate = world.partner[shape]
    color, count = world.usual_color[shape], world.usual_count[shape]
    groups = [(mate, world.usual_color[mate], 1)]
    query: str | None = None
    split: str | None = None
    if kind == "color" and not consistent:
        color = rng.choice([c for c in config.colors if c != color])
    elif kind == "count" and not consistent:
        count = rng.choice([k for k in range(1, config.max_objects + 1) if k != count])
    elif kind == "existence":
        non = [s for s in config.shapes if s not in (shape, mate)]
        yes = index % 2 == 0
        if yes and consistent:
            query = mate
        elif yes:  # counter: a non-partner that is present after all
            query = rng.choice(non)
            groups.append((query, world.usual_color[query], 1))
        elif not consistent:  # counter: the partner is absent (POPE's adversarial negative)
            query, split, groups = mate, "adversarial", []
        elif index % 4 == 1:
            query, split = rng.choice(non), "random"
        else:
            query, split = (
                max(non, key=lambda s: (popularity[s], -config.shapes.index(s))),
                "popular",
            )
    objs = place(rng, config, [(shape, color, count), *groups])
    row = question_row(kind, rng, config, world, objs, shape, query)
    assert row["prior"] == cell, (kind, cell, row)
    row["negative_split"] = split
    return objs, row
