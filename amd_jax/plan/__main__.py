r"""Compile a config's steps for a TPU topology on this host and print (and write as JSON) their cost per chip.

    TPU_SKIP_MDS_QUERY=1 python -m amd_jax.plan --config=configs/sdxl.py --topology=v5p:2x4x4 \
        [--config.key=value ...] [--out=plan.json] [--steps=generator,sample,critic,eval_sampler] \
        [--xla_option=xla_tpu_enable_latency_hiding_scheduler=false ...] [--nocompile]

Compiling needs libtpu (requirements-tpu.txt), no TPU: the topology's devices come from libtpu's description and
the real TPU compiler runs here. --nocompile (tracing only: each step's jaxpr FLOPs) needs no libtpu: the mesh is a
jax.sharding.AbstractMesh of the topology's device count (plan/chips.py's table; sdxl_tiny takes ~20 s, sdxl on
v5p:2x4x4 ~2 min on a 2-core host). No weight or data file is read (configs/sdxl.py with an empty model.path is
planned with SDXL base's architecture). Per step: compile time, FLOPs and bytes accessed per chip, the compiler's time
estimate (`optimal_seconds`) and the MFU it implies, the roofline bound (FLOPs at peak or bytes at HBM bandwidth),
per-chip memory against HBM (and the knobs to turn when it does not fit), collective bytes from the optimized HLO;
then the TTUR-weighted iteration and the full run, timed by the compiler's estimates or, when one of them is not
positive (libtpu gave negative ones for sit_xl2), by the roofline bounds, and labelled so.
The estimates are the compiler's, not measurements: they say which figures used which --xla_option.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")  # its Flax modules warn "deprecated" once per instance

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from amd_jax import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology GEN:SHAPE, e.g. v5p:2x4x4, v4:2x2x4, v5e:4x4.")
_OUT = flags.DEFINE_string("out", None, "Also write the plan as JSON here.")
_STEPS = flags.DEFINE_list("steps", "generator,sample,critic,eval_sampler", "Steps to compile.")
_XLA = flags.DEFINE_multi_string("xla_option", [], "KEY=VALUE compiler option for .compile() (repeatable).")
_COMPILE = flags.DEFINE_bool("compile", True, "False: only trace the steps and count their jaxpr FLOPs (seconds to "
                             "minutes, a few GiB of host memory, no libtpu; no memory or time figures).")
flags.mark_flags_as_required(["config", "topology"])


def main(argv):
    del argv
    import jax

    from amd_jax import paths
    from amd_jax.errors import ConfigError
    from amd_jax.plan import core, table
    from amd_jax.writers import setup_logging

    setup_logging()
    jax.config.update("jax_enable_compilation_cache", False)  # executables compiled for a topology cannot be read back
    try:
        options = _options(_XLA.value)
        unknown = sorted(set(_STEPS.value) - set(core.STEPS))
        if unknown:
            raise ConfigError(f"--steps: unknown {unknown}; choose from {','.join(core.STEPS)}.")
        paths.resolve_config_paths(_CONFIG.value)
        plan = core.make_plan(_CONFIG.value, _TOPOLOGY.value, tuple(_STEPS.value), options, compile=_COMPILE.value,
                              on_step=_write)
    except ConfigError as e:
        sys.exit(f"Plan error: {e}")
    print(table.text(plan))
    if _OUT.value:
        print(f"written: {_OUT.value}")


def _write(plan: dict) -> None:
    """--out after every step: the steps compiled so far (a plan killed later keeps them)."""
    if _OUT.value:
        from amd_jax.writers import json_text

        text = json_text(plan, indent=1)  # valid JSON: a NaN/inf becomes null with a note
        with open(_OUT.value, "w") as f:
            f.write(text)


def _options(pairs) -> dict:
    from amd_jax.errors import ConfigError

    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise ConfigError(f"--xla_option needs KEY=VALUE, got {bad} (e.g. xla_tpu_enable_latency_hiding_scheduler"
                          "=false).")
    return dict(p.split("=", 1) for p in pairs)


if __name__ == "__main__":
    cli.run(main)
