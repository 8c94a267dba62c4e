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



def _modules_the_tests_import() -> list[str]:
    """The amd_jax modules that tests/*.py import (at any depth), i.e. what one pytest process holds together."""
    tests = os.path.join(ROOT, "tests")
    known = _modules()
    names = set()
    for f in os.listdir(tests):
        if f.endswith(".py"):
            names |= {n for n in _imports(os.path.join(tests, f)) if n in known}
    return sorted(names)


def test_the_modules_the_tests_import_define_no_flag_twice():
    """absl flags are process-global: two entry points or tools that define the same flag (e.g. `--out`) cannot be
    imported in one process, and one pytest process imports whatever tests/*.py import. Those modules are imported
    together in one fresh interpreter; a DuplicateFlagError names the two modules (a collection error of the whole
    suite otherwise, found only by a full run). A test reaches a tool's logic through a library module, or runs the
    tool as a subprocess."""
    import subprocess
    import sys

    names = _modules_the_tests_import()
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\nprint(len(sys.argv) - 1)"
    env = {**os.environ, "USE_TF": "0", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.stdout
    assert int(done.stdout.split()[-1]) == len(names) > 50
