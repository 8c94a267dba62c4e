"""Host seconds to produce one ready, sharded training batch: `Session.batch(step)` until its arrays are ready
(ready_ms), and until it returns (return_ms: the host thread's own time; work dispatched to the devices may still run).

    python -m amd_jax.tools.bench_batch --config=configs/sdxl_tiny.py --workdir=/tmp/bench [--batches=20]

Builds the session as training does (nothing else: no teacher, no compile of the steps), makes one warm-up batch
(compilations, lazy loading of the encoders), then times --batches further batches (steps 1..N, each new data) and
prints one JSON line with the medians and the p90 of ready_ms. This is what the loop's prefetch thread does per step.
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
    returned, ready = [], []
    for step in range(1, _BATCHES.value + 1):
        t0 = time.perf_counter()
        batch = session.batch(step)
        returned.append(time.perf_counter() - t0)
        jax.block_until_ready(batch)
        ready.append(time.perf_counter() - t0)
    ms = lambda t, q=50: round(1e3 * float(np.percentile(t, q)), 3)
    print(json.dumps({
        "devices": jax.device_count(), "mesh": dict(session.mesh.shape), "global_batch": session.c.global_batch,
        "batches": len(ready), "ready_ms": ms(ready), "ready_p90_ms": ms(ready, 90), "return_ms": ms(returned),
    }))


if __name__ == "__main__":
    cli.run(main)
