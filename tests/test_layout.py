"""The README's Layout rules, read off the source with ast (imports at any depth, inside functions too):
no import circle between modules (a package __init__ and its own submodules aside: re-exports and the task
registry's lazy lookups), method/ is pure math, and models/, metrics/, data/ import no command-line code."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules() -> dict[str, str]:
    """{dotted module name: file} of the amd_jax package."""
    out = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "amd_jax")):
        for f in files:
            if f.endswith(".py"):
                name = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = os.path.join(folder, f)
    return out


def _imports(path: str) -> set[str]:
    """Every module name an import statement in `path` names (absolute imports; the project uses no others)."""
    names = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def ours(name):  # the longest prefix of `name` that is one of our modules
        parts = name.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in mods), None)

    return {m: {t for t in map(ours, _imports(p)) if t and t != m} for m, p in mods.items()}


def _own_package_edge(a: str, b: str) -> bool:
    return b.startswith(a + ".") or a.startswith(b + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles a depth-first walk of `graph` meets (each as a path back to its start)."""
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                cycles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_import_circle():
    graph = _graph()
    assert sum(map(len, graph.values())) > 200  # the walk sees the real imports
    assert "amd_jax.tasks" in graph["amd_jax.config.checks"]  # an import inside a function counts
    assert not _cycles({m: {t for t in ts if not _own_package_edge(m, t)} for m, ts in graph.items()})
    # the same check on a circle made by hand (the old config_base <-> evals one) finds it
    circle = {**graph, "amd_jax.config.checks": graph["amd_jax.config.checks"] | {"amd_jax.evaluators"},
              "amd_jax.evaluators": graph["amd_jax.evaluators"] | {"amd_jax.config.checks"}}
    assert any(set(c) == {"amd_jax.config.checks", "amd_jax.evaluators"} for c in _cycles(circle))


def test_method_is_pure_math_and_libraries_import_no_cli():
    mods = _modules()
    for m, path in mods.items():
        imported = _imports(path)
        if m.startswith("amd_jax.method"):
            ours = {i for i in imported if i.startswith("amd_jax")}
            assert all(i.startswith("amd_jax.method") for i in ours), (m, ours)
        if m.startswith(("amd_jax.models", "amd_jax.metrics", "amd_jax.data", "amd_jax.method")):
            cli = {i for i in imported if i in ("amd_jax.cli", "absl.app", "absl.flags") or i.startswith("absl.flags")}
            assert not cli, (m, cli)
