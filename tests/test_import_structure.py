"""The import graph of prada_jax has no cycles, and imports inside functions are the listed exceptions.

The graph is read from the source with `ast` (nothing is imported, so this needs no jax). An edge A -> B means that
importing A imports B: an import statement of A that names B, or a module inside package B (which imports B's
__init__ first, unless B is a package around A). A module-level import counts wherever it is (in a try block, a
class body, under `if TYPE_CHECKING:`); an import inside a function body runs only when the function does, so it
can hide a cycle (the module imported late imports the first one back). Such imports are allowed only where an
optional dependency needs them or a heavy import would otherwise be paid by every process that imports the
module; `FUNCTION_LEVEL` lists each with its reason, and a new one fails here until it is listed. Counting
those too, the graph has no cycle either.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "prada_jax"

# (importing module, imported module) -> why the import is inside a function.
FUNCTION_LEVEL = {
    ("prada_jax.cli_support", "prada_jax.sharding"):
        "keeps `import prada_jax.cli_support` light (0.01 s, not the simulator's 1.1 s) for the entry points that "
        "import the simulator only in their main, so that `--help` stays quick (python -m studies <name> --help)",
    ("prada_jax.calibration", "prada_jax.costs"):
        "keeps `import prada_jax.calibration` (the trace statistics and the published fits) free of jax",
}


def _modules() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every prada_jax/**/*.py (a package is its __init__.py)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The prada_jax module `name` is, or is inside of (`prada_jax.sim.params.SimConfig` -> prada_jax.sim.params)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The prada_jax modules an import statement of `module` names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the package `level - 1` levels above this module's package
            package = _package_of(module).split(".")
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        # `from package import name`: the submodule `name` when there is one, else a name of the package itself
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    return {target for name in names if name.startswith(PACKAGE) and (target := _resolve(name))}


def _with_packages(module: str, target: str) -> set[str]:
    """`target` and the packages around it that importing it runs first (those around `module` already ran)."""
    around_module = {module.rsplit(".", i)[0] for i in range(module.count(".") + 1)}
    parts = target.split(".")
    packages = {".".join(parts[:i]) for i in range(1, len(parts))} - around_module
    return ({target} | packages) - {module}


def import_edges() -> dict[tuple[str, str], dict]:
    """(module, imported module) -> {"module_level": [line numbers], "function_level": [line numbers]} over the
    whole package."""
    edges: dict[tuple[str, str], dict] = {}

    def visit(module: str, node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, child):
                    for imported in _with_packages(module, target):
                        edge = edges.setdefault((module, imported), {"module_level": [], "function_level": []})
                        edge["function_level" if in_function else "module_level"].append(child.lineno)
            visit(module, child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                     ast.Lambda)))

    for module, path in MODULES.items():
        visit(module, ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return edges


def cycles(edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through them."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in sorted(MODULES):
        if v not in index:
            connect(v)
    return [_one_cycle(graph, component) for component in components]


def _one_cycle(graph, component: set[str]) -> list[str]:
    """A cycle through the first module of `component` (breadth-first: a shortest one), for the failure message."""
    start = min(component)
    parents = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in graph.get(v, ()):
            if w == start:
                path = [v]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return list(reversed(path)) + [start]
            if w in component and w not in parents:
                parents[w] = v
                queue.append(w)
    return sorted(component)


def _show(found) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in found)


def test_the_package_is_found():
    assert {"prada_jax", "prada_jax.sim", "prada_jax.sim.params", "prada_jax.sim.run", "prada_jax.sharding"} <= set(MODULES)
    edges = import_edges()
    assert edges[("prada_jax.sim.run", "prada_jax.sim.params")]["module_level"]
    assert edges[("prada_jax.sharding", "prada_jax.sim")]["module_level"]  # the package around sim.run, run first


def test_no_cycle_among_module_level_imports():
    edges = {edge: info for edge, info in import_edges().items() if info["module_level"]}
    found = cycles(edges)
    assert not found, "import cycles (module-level imports):\n" + _show(found)


def test_no_cycle_counting_function_level_imports_too():
    """The listed exceptions defer an import, they do not hide a cycle either."""
    found = cycles(import_edges())
    assert not found, "import cycles (through imports inside functions):\n" + _show(found)


def test_function_level_imports_are_the_listed_exceptions():
    function_level = {edge: info["function_level"] for edge, info in import_edges().items() if info["function_level"]}
    unlisted = {edge: lines for edge, lines in function_level.items() if edge not in FUNCTION_LEVEL}
    assert not unlisted, (
        "imports inside functions (import at module level, or list the pair in FUNCTION_LEVEL with why it cannot "
        "be: an optional dependency, or a heavy import every process importing the module would pay):\n"
        + "\n".join(f"{a} -> {b} (lines {lines})" for (a, b), lines in sorted(unlisted.items())))
    stale = sorted(set(FUNCTION_LEVEL) - set(function_level))
    assert not stale, f"listed in FUNCTION_LEVEL but no longer imported inside a function: {stale}"


def test_the_built_in_schedulers_are_registered_before_a_sim_config_exists():
    """SimConfig checks its scheduler name against params.SCHEDULERS, which prada_jax.sim.schedulers fills; the
    package prada_jax.sim (run before any module inside it) must import the schedulers, and params must not."""
    edges = {edge for edge, info in import_edges().items() if info["module_level"]}

    def reaches(start, goal):
        seen, todo = {start}, [start]
        while todo:
            v = todo.pop()
            for a, b in edges:
                if a == v and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return goal in seen

    assert reaches("prada_jax.sim", "prada_jax.sim.schedulers")
    assert not reaches("prada_jax.sim.params", "prada_jax.sim.schedulers")
