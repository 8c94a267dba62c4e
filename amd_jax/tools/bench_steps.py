"""Compile time and steady-state time of each step function, for a config on this machine's devices.

    python -m amd_jax.tools.bench_steps --config=configs/toy2d.py --workdir=/tmp/bench [--iters=200] [--devices=1]

Builds the session exactly as training does (abstract state, shardings, AOT compile), then times each compiled
step over --iters calls after one warm-up call, blocking on the result. Prints one JSON line per step with
compile seconds, median and p90 milliseconds per call, and GFLOP per call and device from XLA's cost analysis.
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("USE_TF", "0")  # before transformers is imported (by the SDXL experiment): no TensorFlow

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from amd_jax import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Scratch workdir (the teacher is trained there if missing).")
_ITERS = flags.DEFINE_integer("iters", 200, "Timed calls per step.")
_DEVICES = flags.DEFINE_integer("devices", 0, "Use only the first N devices (0 = all).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    import jax
    import numpy as np

    from amd_jax.session import Session
    from amd_jax.writers import setup_logging

    setup_logging()

    devices = jax.devices()[: _DEVICES.value] if _DEVICES.value else jax.devices()
    session = Session(_CONFIG.value, cli.prepare(_CONFIG.value, _WORKDIR.value), devices=devices)
    frozen = session.frozen()
    state = session.initial_state(frozen)
    batch = session.batch(0)
    compiled, seconds, flops = session.compile(frozen, state, batch)
    x, r = compiled["sample"](state, frozen, batch)
    calls = {  # each returns (new state, everything it computed) so that blocking waits for all of it
        "generator": lambda s: (lambda out: (out[0], out))(compiled["generator"](s, frozen, batch)),
        "sample": lambda s: (s, compiled["sample"](s, frozen, batch)),
        "critic": lambda s: (lambda out: (out[0], out))(compiled["critic"](s, frozen, batch, x, r)),
    }
    for name, call in calls.items():
        state = jax.block_until_ready(call(state))[0]  # warm-up
        times = []
        for _ in range(_ITERS.value):
            t0 = time.perf_counter()
            state = jax.block_until_ready(call(state))[0]
            times.append(time.perf_counter() - t0)
        print(json.dumps({
            "step": name, "devices": len(devices), "mesh": dict(session.mesh.shape),
            "compile_s": round(seconds[name], 3), "median_ms": round(1e3 * float(np.median(times)), 3),
            "p90_ms": round(1e3 * float(np.percentile(times, 90)), 3), "gflop_per_call": round(flops[name] / 1e9, 4),
        }))


if __name__ == "__main__":
    cli.run(main)
