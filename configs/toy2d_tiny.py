"""toy2d_tiny: the toy2d pipeline at test size (tiny MLPs, 12 steps); what the tests and CI run.

Run (this CPU, about 30 s, mostly compilation):
    python -m amd_jax.train --config=configs/toy2d_tiny.py --workdir=workdirs/toy2d_tiny
Result: eval.json and samples/ as for toy2d; the numbers mean nothing at this size.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import toy2d  # noqa: E402


def get_config():
    c = toy2d.get_config()
    c.total_steps = 12
    c.global_batch = 32
    c.model.hidden, c.model.depth = 32, 1
    c.teacher.steps, c.teacher.batch_size = 200, 128
    c.dmd.ttur = 2
    c.optim.warmup_steps = 2
    c.sharding.fsdp_min_size = 256  # so that the tiny MLP's kernels really are FSDP-sharded
    c.checkpoint.every = 4
    c.checkpoint.async_save = True
    c.log.every = 4
    c.log.sample_every = 8
    c.eval.num_samples = 256
    return c
