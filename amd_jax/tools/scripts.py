"""The console scripts of pyproject.toml's [project.scripts]: each runs its module as `python -m MODULE` would, so
`amd-train --config=...` and `python -m amd_jax.train --config=...` are the same command."""

from __future__ import annotations

import runpy


def _run(module: str):
    return lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)


train = _run("amd_jax.train")
evaluate = _run("amd_jax.evaluate")
sweep = _run("amd_jax.sweep")
plan = _run("amd_jax.plan")
compare_runs = _run("amd_jax.tools.compare_runs")
prepare_sdxl = _run("amd_jax.tools.prepare_sdxl")
fetch_mnist = _run("amd_jax.tools.fetch_mnist")
convert_sit = _run("amd_jax.tools.convert_sit")
convert_inception = _run("amd_jax.tools.convert_inception")
convert_openclip = _run("amd_jax.tools.convert_openclip")
convert_inputs = _run("amd_jax.tools.convert_inputs")
