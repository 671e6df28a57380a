"""The package's import graph: no cycles, and no import from a lower layer into a higher one.

Every `import` is read with `ast`, at module level, inside functions (where heavy or late imports
sit, which hides a cycle from Python itself) and under `if TYPE_CHECKING:` (a type-only import
is still a dependency of the module's design). The layers are the README's ("Layout and
layering"); the few known exceptions are listed below with the work that removes them, and an
exception that no longer occurs fails the test too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "mbpo_bench": ROOT / "mbpo_bench",
    "mbpo_bench.tasks": ROOT / "tasks",
    "mbpo_bench.trainers": ROOT / "trainers",
}

# Bottom to top; a module may import its own unit, its layer's other units, or any lower layer.
# A unit is the first name below mbpo_bench (a subpackage or a top-level module).
LAYERS: list[set[str]] = [
    {
        "__init__",
        "errors",
        "config",
        "ranges",
        "runs",
        "parallel",
        "metrics",
        "progress",
        "checkout",
    },
    {"models"},
    {"data", "tasks", "judges"},
    {"modality"},
    {"trainers", "evaluation"},
    {"reporting"},
    {
        "quickstart",
        "quickstart_config",
        "quickstart_report",
        "plan",
        "ablation",
    },
    {"cli", "__main__"},
]
# ... except these pairs of the same layer, which must not import each other.
APART = {frozenset({"trainers", "evaluation"})}

# Known exceptions, each with the change that removes it (issue 14).
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_CYCLES: set[frozenset[str]] = set()


@dataclass(frozen=True)
class Edge:
    line: int
    kind: str  # "module", "function" or "type"


def modules(packages: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the given package folders."""
    out: dict[str, Path] = {}
    nested = [Path(p) for p in packages.values()]
    for prefix, base in packages.items():
        for path in sorted(base.rglob("*.py")):
            if "__pycache__" in path.parts or any(
                other != base and other in path.parents for other in nested
            ):
                continue
            parts = path.relative_to(base).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((prefix, *parts))] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, Edge]]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, Edge]] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.body:
                    visit_one(sub, "type")
                for sub in child.orelse:
                    visit_one(sub, kind)
                continue
            visit_one(child, kind)

    def visit_one(child: ast.AST, kind: str) -> None:
        if isinstance(child, ast.Import):
            found.extend((a.name, Edge(child.lineno, kind)) for a in child.names)
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                up = package.split(".")[: len(package.split(".")) - child.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            for alias in child.names:  # `from pkg import module` imports the module
                full = f"{base}.{alias.name}"
                found.append((full if full in known else base, Edge(child.lineno, kind)))
        else:
            inner = kind
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and kind == "module":
                inner = "function"
            visit(child, inner)

    visit(ast.parse(path.read_text()), "module")
    return found


def import_graph(packages: dict[str, Path]) -> dict[str, dict[str, Edge]]:
    """module -> {imported module of the same packages: where and how}."""
    known = modules(packages)
    graph: dict[str, dict[str, Edge]] = {m: {} for m in known}
    for name, path in known.items():
        for target, edge in _imports(name, path, known):
            while target and target not in known:  # `import a.b.c` of a function: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].setdefault(target, edge)
    return graph


def cycles(graph: dict[str, dict[str, Edge]]) -> set[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.add(frozenset(component))
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward(graph: dict[str, dict[str, Edge]]) -> set[tuple[str, str]]:
    """Imports into a higher layer, or between same-layer units kept apart."""
    rank = {u: i for i, layer in enumerate(LAYERS) for u in layer}
    bad = set()
    for source, targets in graph.items():
        for target in targets:
            a, b = unit(source), unit(target)
            if a == b:
                continue
            if rank[b] > rank[a] or frozenset({a, b}) in APART:
                bad.add((source, target))
    return bad


def _describe(graph: dict[str, dict[str, Edge]], pairs: set[tuple[str, str]]) -> str:
    return "; ".join(
        f"{a} -> {b} (line {graph[a][b].line}, {graph[a][b].kind})" for a, b in sorted(pairs)
    )


def test_every_unit_has_a_layer() -> None:
    units = {unit(m) for m in modules(PACKAGES)}
    placed = set().union(*LAYERS)
    assert units - placed == set(), "add these to LAYERS (and to the README's layering)"
    assert placed - units == set(), "these LAYERS entries match no module"


def test_no_import_cycles() -> None:
    graph = import_graph(PACKAGES)
    found = cycles(graph)
    new = found - KNOWN_CYCLES
    edges = {(a, b) for c in new for a in c for b in graph[a] if b in c}
    assert not new, f"import cycles: {_describe(graph, edges)}"
    assert found >= KNOWN_CYCLES, f"gone, remove from KNOWN_CYCLES: {KNOWN_CYCLES - found}"


def test_no_upward_imports() -> None:
    graph = import_graph(PACKAGES)
    found = upward(graph)
    assert found - KNOWN_UPWARD == set(), (
        f"upward imports: {_describe(graph, found - KNOWN_UPWARD)}"
    )
    assert found >= KNOWN_UPWARD, f"gone, remove from KNOWN_UPWARD: {KNOWN_UPWARD - found}"


def test_the_walker_sees_function_level_type_only_and_relative_imports(tmp_path: Path) -> None:
    """The checks above can fail: a cycle made only of function-level and type-only imports
    (the kind Python never trips over at import time) is found, and so is an upward import."""
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from pkg.low import b\n")
    (pkg / "low" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
    )
    (pkg / "cli.py").write_text("import pkg.low.a\n")
    graph = import_graph({"pkg": pkg})
    assert graph["pkg.low.a"]["pkg.low.b"].kind == "function"
    assert graph["pkg.low.b"]["pkg.low.a"].kind == "type"
    assert cycles(graph) == {frozenset({"pkg.low.a", "pkg.low.b"})}
    assert graph["pkg.cli"]["pkg.low.a"].kind == "module"
    # the real tree: a function-level import the walker must see (api -> runner)
    real = import_graph(PACKAGES)
    assert real["mbpo_bench.evaluation.api"]["mbpo_bench.evaluation.runner"].kind == "function"
    fake = {"mbpo_bench.models.x": {"mbpo_bench.cli.y": Edge(1, "function")},
            "mbpo_bench.trainers.a": {"mbpo_bench.evaluation.b": Edge(2, "type")},
            "mbpo_bench.cli.y": {"mbpo_bench.models.x": Edge(3, "module")}}  # fmt: skip
    assert upward(fake) == {
        ("mbpo_bench.models.x", "mbpo_bench.cli.y"),  # into a higher layer
        ("mbpo_bench.trainers.a", "mbpo_bench.evaluation.b"),  # between units kept apart
    }


def recipe_imports(paths: dict[str, Path], recipes: set[str]) -> set[tuple[str, str]]:
    """(module, what) for every import of a recipe module's code (its `run`, `make_step`, ...)
    outside trainers/: above the trainers, a method is reached through the trainer table, and
    only a recipe's config class may be named directly (a typed field of a higher config)."""
    found: set[tuple[str, str]] = set()
    for name, path in paths.items():
        if unit(name) == "trainers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in recipes:
                found |= {
                    (name, f"{node.module}.{a.name}")
                    for a in node.names
                    if not a.name.endswith("Config")
                }
            elif isinstance(node, ast.Import):
                found |= {(name, a.name) for a in node.names if a.name in recipes}
    return found


def test_methods_are_run_through_the_trainer_table(tmp_path: Path) -> None:
    """`mbpo-bench train`, `ablate` and the quickstart find a method's run function in
    `trainers/table.py`, so a method added there is reachable from all three."""
    from mbpo_bench.trainers.table import TRAINERS

    recipes = {spec.module for spec in TRAINERS.values()}
    assert recipe_imports(modules(PACKAGES), recipes) == set()
    fake = tmp_path / "q.py"  # the check can fail
    fake.write_text(
        "from mbpo_bench.trainers.sft import SFTConfig, run_sft\nimport mbpo_bench.trainers.dpo\n"
    )
    assert recipe_imports({"mbpo_bench.quickstart": fake}, recipes) == {
        ("mbpo_bench.quickstart", "mbpo_bench.trainers.sft.run_sft"),
        ("mbpo_bench.quickstart", "mbpo_bench.trainers.dpo"),
    }


def private_imports(paths: list[Path]) -> set[tuple[str, str]]:
    """(file, name) for every import of a private name (a `_` part) of the package."""
    found: set[tuple[str, str]] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mbpo_bench"):
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("mbpo_bench")]
            found |= {
                (path.name, n)
                for n in names
                if any(p.startswith("_") and not p.startswith("__") for p in n.split("."))
            }
    return found


def private_definitions() -> set[str]:
    """Names of the package's private functions, methods and classes (`_name`)."""
    return {
        node.name
        for path in modules(PACKAGES).values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.name.startswith("_")
        and not node.name.startswith("__")
    }


def private_calls(paths: list[Path], private: set[str]) -> set[tuple[str, str]]:
    """(file, attribute) for every `x._name` whose `_name` is one of the package's private names
    (peers' private hooks, e.g. TRL's `_generate`, are theirs to override, not ours)."""
    return {
        (path.name, ast.unparse(node))
        for path in paths
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in private
    }


def test_benchmarks_use_only_public_names(tmp_path: Path) -> None:
    """benchmarks/ is outside the product: it may only import and call what a user could."""
    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    private = private_definitions()
    assert private_imports(scripts) == set()
    assert private_calls(scripts, private) == set()
    fake = tmp_path / "bench_x.py"  # the checks can fail
    fake.write_text(
        "from mbpo_bench.trainers.loop import _optimizer_step, train_loop\n"
        "ids = vlm._prompt_ids(texts)\n"
    )
    assert private_imports([fake]) == {("bench_x.py", "mbpo_bench.trainers.loop._optimizer_step")}
    assert private_calls([fake], {"_prompt_ids"}) == {("bench_x.py", "vlm._prompt_ids")}
