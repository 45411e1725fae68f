"""The import graph of src/coulisse has floors and no circles (STYLE.md, habit 14), read from the source with
`ast`, without importing anything.

An import at module level is a hard edge: it runs when the module loads, so a circle of them breaks
depending on which module is imported first. An import inside a function is a lazy edge: it runs on the
first call (how `coulisse --help` stays light). Lazy edges still count for the floors (a tokenizer that
imports the CLI inside a function is as wrong as at the top), and a circle that needs one is reported
apart, against a short list of known ones.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Circles that close only through a lazy import, each with why it is still there. A new one fails
# `test_lazy_circles_are_known`; one that disappears fails it too, so that this list only shrinks.
KNOWN_LAZY_CIRCLES: set[frozenset[str]] = set()  # none left; a new one must be argued here

PIPELINE_STAGES = ("coulisse.tokenizer", "coulisse.weights", "coulisse.models", "coulisse.engine")
# Finding and assembling a model sits above the stages, the tasks above that, the registry above the
# tasks, the interfaces above everything.
ABOVE_STAGES = ("coulisse.hub", "coulisse.hub_cache", "coulisse.hub_download", "coulisse.defaults",
                "coulisse.hub_fallback", "coulisse.checkpoint", "coulisse.tasks",
                "coulisse.pipelines", "coulisse.auto", "coulisse.sentence", "coulisse.sparse_encoder",
                "coulisse.interfaces")
# Commands that take --model, --threads or --quantize (bench's options are the benchmark's own).
MODEL_COMMANDS = ("coulisse.interfaces.task_commands", "coulisse.interfaces.explain_command",
                  "coulisse.interfaces.qa_commands",
                  "coulisse.interfaces.jobs.command", "coulisse.interfaces.server.command",
                  "coulisse.interfaces.studio.command")


@dataclass(frozen=True)
class Floor:
    """Modules under `modules` (but not under `exempt`) never import one under `forbidden` (but not under
    `allowed`); a name stands for the module and everything under it."""

    modules: tuple[str, ...]
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()
    why: str = ""


FLOORS = [
    Floor(("coulisse.errors",), ("coulisse",), why="errors are the floor: they import nothing of coulisse"),
    Floor(("coulisse.families", "coulisse.config"), ("coulisse",), allowed=("coulisse.errors", "coulisse.families"),
          why="a config is read from config.json and the family table alone"),
    Floor(PIPELINE_STAGES, ABOVE_STAGES, why="the pipeline's stages know nothing of tasks, registry or interfaces"),
    Floor(("coulisse.tasks",), ("coulisse.interfaces", "coulisse.pipelines", "coulisse.sentence",
                                "coulisse.sparse_encoder"),
          why="the registry (coulisse.pipelines), SentenceEncoder and SparseEncoder sit above the tasks; "
              "interfaces adapt them"),
    Floor(("coulisse.interfaces",), ("coulisse.interfaces.cli",),
          why="cli.py only assembles the group: no command or helper imports it"),
    Floor(("coulisse.interfaces.options",), ("coulisse.interfaces",),
          why="the shared options sit below every command"),
    # coulisse.ray is the Ray Data interface (STYLE.md habit 11), named at the top for `import coulisse.ray`;
    # coulisse.explain is `coulisse explain` for a notebook, named at the top for `from coulisse.explain import ...`.
    Floor(("coulisse",), ("coulisse.interfaces",),
          exempt=("coulisse.interfaces", "coulisse.__main__", "coulisse.ray", "coulisse.explain"),
          why="the library never imports its interfaces"),
]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    lazy: bool

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}{', inside a function' if self.lazy else ''})"


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / "coulisse").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules an import statement names: for `from a import b`, a.b when it is a module, else a."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def module_edges(module: str, path: Path) -> list[Edge]:
    edges = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):  # never runs
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in _imported(child, module, path.name == "__init__.py"):
                    if name.split(".")[0] != "coulisse":
                        continue
                    while name not in MODULES:  # an attribute of a module: the module
                        name = name.rpartition(".")[0]
                    if name != module:
                        edges.append(Edge(module, name, child.lineno, lazy))
            else:
                visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return edges


EDGES = list(dict.fromkeys(edge for module, path in MODULES.items() for edge in module_edges(module, path)))


def graph(edges: list[Edge]) -> dict[str, dict[str, Edge]]:
    out: dict[str, dict[str, Edge]] = {module: {} for module in MODULES}
    for edge in edges:
        out[edge.source].setdefault(edge.target, edge)
    return out


def circles(edges: list[Edge]) -> list[list[Edge]]:
    """One circle per strongly connected component of more than one module (Tarjan's algorithm)."""
    g = graph(edges)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = {stack.pop()}
            while v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                components.append(component)

    for module in sorted(g):
        if module not in index:
            connect(module)
    return [_circle_in(g, component) for component in components]


def _circle_in(g: dict[str, dict[str, Edge]], component: set[str]) -> list[Edge]:
    """The shortest way around from the component's first module back to it."""
    start = min(component)
    came: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w, edge in g[v].items():
            if w == start:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, came[path[0].source])
                return path
            if w in component and w not in came:
                came[w] = edge
                queue.append(w)
    raise AssertionError(f"no way around {sorted(component)}: this is a bug in the test")


def show(circle: list[Edge]) -> str:
    return "\n    ".join(str(edge) for edge in circle)


def test_the_walker_sees_hard_and_lazy_edges():
    """Guards the other tests against passing on an empty graph."""
    seen = {(e.source, e.target, e.lazy) for e in EDGES}
    assert ("coulisse.interfaces.cli", "coulisse.interfaces.task_commands", False) in seen
    assert ("coulisse.interfaces.options", "coulisse.pipelines", True) in seen
    assert ("coulisse.pipelines", "coulisse.tasks", False) in seen


def test_no_circle_among_module_level_imports():
    found = circles([e for e in EDGES if not e.lazy])
    assert not found, "import circles at module level:\n    " + "\n\n    ".join(show(c) for c in found)


def test_lazy_circles_are_known():
    found = {frozenset(e.source for e in circle): circle for circle in circles(EDGES)}
    new = [show(circle) for members, circle in found.items() if members not in KNOWN_LAZY_CIRCLES]
    gone = [sorted(members) for members in KNOWN_LAZY_CIRCLES if members not in found]
    assert not new, "import circles through a function-level import:\n    " + "\n\n    ".join(new)
    assert not gone, f"no longer circles: remove them from KNOWN_LAZY_CIRCLES: {gone}"


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("floor", FLOORS, ids=lambda f: ",".join(f.modules))
def test_floors(floor: Floor):
    assert any(_under(m, floor.modules) for m in MODULES), f"no module under {floor.modules}: a stale floor"
    broken = [str(e) for e in EDGES
              if _under(e.source, floor.modules) and not _under(e.source, floor.exempt)
              and _under(e.target, floor.forbidden) and not _under(e.target, floor.allowed)]
    assert not broken, f"{floor.why}:\n    " + "\n    ".join(broken)


def test_every_command_module_reads_the_shared_options():
    """`--model`, `--threads`, `--quantize` and `load_pipeline` are written once, in options.py."""
    for command in MODEL_COMMANDS:
        targets = {e.target for e in EDGES if e.source == command}
        assert "coulisse.interfaces.options" in targets, command
