"""sdxl_tiny: configs/sdxl.py's code path with the tiny SDXL-architecture fixtures (tests/fixtures/sdxl_tiny) and
the tiny open_clip reward in HPSv2 format (tests/fixtures/clip/openclip_tiny). The numbers mean nothing.

Run (this CPU, 8 simulated devices, mostly compilation):
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m amd_jax.train --config=configs/sdxl_tiny.py \
        --workdir=workdirs/sdxl_tiny
4-step student with backward simulation, CFG 8, HPSv2-format reward on VAE-decoded 32 px images, TTUR 2, GAN on
(real latents: data.real, e.g. written by tests/test_sdxl_train.py), mesh data=4 x fsdp=2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import sdxl  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FIX = os.path.join(_ROOT, "tests", "fixtures")


def get_config():
    c = sdxl.get_config()
    c.total_steps = 4
    c.global_batch = 8
    c.model.path = os.path.join(_FIX, "sdxl_tiny")
    c.model.resolution = 128  # latents 16 x 16 (tiny VAE: factor 2 -> 32 px images)
    c.model.teacher_dtype = "bfloat16"
    c.model.compute_dtype = "float32"
    # diffusers' Flax UNet, the reference the fixtures were made with; tests/test_sdxl_unet_flax.py checks that the
    # owned, scanned, remat'd UNet (configs/sdxl.py's default) is the same denoiser on these fixtures.
    c.model.unet_impl, c.model.unet_scan, c.model.unet_remat = "diffusers", False, "none"
    c.reward.path = os.path.join(_FIX, "clip", "openclip_tiny")
    c.data.path = os.path.join(_FIX, "captions_tiny.txt")  # 12 captions, one per line
    c.gan.enabled = False  # needs data.real; the test turns it on with generated real latents
    c.gan.hidden = 32
    c.dmd.ttur = 2
    c.optim.student_lr = c.optim.critic_lr = 1e-4
    c.optim.warmup_steps = 2
    c.mesh.shape = (4, 2)
    c.sharding.fsdp_min_size = 2**10  # so that the tiny UNet's kernels really are FSDP-sharded
    c.checkpoint.every = 2
    c.log.every = 1
    c.log.sample_every = 0
    c.eval.num_samples = 8
    c.eval.grid_size = 8
    c.eval.at_end = False
    return c
