"""sit_tiny: configs/sit_xl2.py's code path on the tiny fixtures: a random 2-block SiT in the converted layout
(tests/fixtures/sit_tiny, 8x8x4 latents, 10 classes), the tiny SDXL-architecture VAE (tests/fixtures/sdxl_tiny/vae,
8x8 latents -> 16 px images) and a tiny random ViT classifier as the reward (tests/fixtures/imagenet_vit). The
numbers mean nothing.

Run (this CPU, 8 simulated devices, mostly compilation):
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m amd_jax.train --config=configs/sit_tiny.py \
        --workdir=workdirs/sit_tiny
1-step student, AMD with groups of 4 per label, TTUR 2, mesh data=4 x fsdp=2 (the SiT's kernels FSDP-sharded).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import sit_xl2  # noqa: E402

_FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")


def get_config():
    c = sit_xl2.get_config()
    c.total_steps = 4
    c.global_batch = 8
    c.model.arch.update({"input_size": 8, "hidden_size": 64, "depth": 2, "num_heads": 4, "num_classes": 10})
    c.model.path = os.path.join(_FIX, "sit_tiny")
    c.model.vae_path = os.path.join(_FIX, "sdxl_tiny")  # its vae/ subfolder
    c.model.compute_dtype = "float32"
    c.reward.path = os.path.join(_FIX, "imagenet_vit")
    c.amd.group_size = 4
    c.student.ema_decay = 0.0
    c.dmd.ttur = 2
    c.optim.student_lr = c.optim.critic_lr = 1e-4
    c.optim.warmup_steps = 2
    c.mesh.shape = (4, 2)
    c.sharding.fsdp_min_size = 2**10
    c.checkpoint.every = 2
    c.log.every = 1
    c.log.sample_every = 0
    c.eval.num_samples = 8
    c.eval.batch_size = 8
    c.eval.grid_size = 8
    c.eval.at_end = False
    return c
