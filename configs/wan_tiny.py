"""wan_tiny: configs/wan21_t2v.py's code path on the tiny Wan fixtures (tests/fixtures/wan_task_tiny: the random
transformer, VAE and umT5 of the parity fixtures, a word-level tokenizer; made by tests/fixtures/
make_wan_task_fixtures.py) with the tiny open_clip reward in HPSv2 format. The numbers mean nothing.

Run (this CPU, 8 simulated devices, mostly compilation):
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m amd_jax.train --config=configs/wan_tiny.py \
        --workdir=workdirs/wan_tiny
5 frames at 32 x 32 (latents 2 x 4 x 4 x 4, 8 tokens), 3-step student with backward simulation, CFG 5 against the
empty prompt, the per-frame HPSv2-format reward on 3 VAE-decoded frames, TTUR 2, mesh data 2 x fsdp 2 x context 2
(the transformers' tokens split over 'context' by Ulysses all-to-all).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import wan21_t2v  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FIX = os.path.join(_ROOT, "tests", "fixtures")


def get_config():
    c = wan21_t2v.get_config()
    c.total_steps = 4
    c.global_batch = 4
    c.model.path = os.path.join(_FIX, "wan_task_tiny")
    c.model.frames, c.model.height, c.model.width = 5, 32, 32
    c.model.text_len = 16
    c.model.compute_dtype = c.model.text_dtype = c.reward.vae_dtype = "float32"
    c.model.remat = "none"
    c.reward.path = os.path.join(_FIX, "clip", "openclip_tiny")
    c.reward.frames = 3
    c.reward.temporal_weight = 0.1
    c.data.path = os.path.join(_FIX, "captions_tiny.txt")
    c.gan.hidden = 16
    c.dmd.ttur = 2
    c.optim.student_lr = c.optim.critic_lr = 1e-4
    c.optim.warmup_steps = 2
    c.mesh.shape = (2, 2, 2)
    c.sharding.fsdp_min_size = 2**9  # so that the tiny transformer's kernels really are FSDP-sharded
    c.checkpoint.every = 2
    c.log.every = 1
    c.log.sample_every = 0
    c.eval.num_samples = 4
    c.eval.grid_size = 4
    c.eval.frames = 3
    c.eval.at_end = False
    return c
