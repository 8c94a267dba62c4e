"""Host seconds to produce one ready, sharded training batch: `Session.batch(step)` until its arrays are ready.

    python -m amd_jax.bench_batch --config=configs/sdxl_tiny.py --workdir=/tmp/bench [--batches=20]

Builds the session as training does (nothing else: no teacher, no compile of the steps), makes one warm-up batch
(compilations, lazy loading of the encoders), then times --batches further batches (steps 1..N, each new data) and
prints one JSON line with the median and p90 milliseconds. This is what the loop's prefetch thread does per step.
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
_WORKDIR = flags.DEFINE_string("workdir", None, "Scratch workdir.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    import jax
    import numpy as np

    from amd_jax.session import Session
    from amd_jax.writers import setup_logging

    setup_logging()
    session = Session(_CONFIG.value, cli.prepare(_CONFIG.value, _WORKDIR.value))
    jax.block_until_ready(session.batch(0))  # warm-up
    times = []
    for step in range(1, _BATCHES.value + 1):
        t0 = time.perf_counter()
        jax.block_until_ready(session.batch(step))
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "devices": jax.device_count(), "mesh": dict(session.mesh.shape), "global_batch": session.c.global_batch,
        "batches": len(times), "median_ms": round(1e3 * float(np.median(times)), 3),
        "p90_ms": round(1e3 * float(np.percentile(times, 90)), 3),
    }))


if __name__ == "__main__":
    cli.run(main)
