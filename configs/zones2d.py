"""zones2d: toy2d with a Forbidden Zone by construction (docs/METHOD.md section 4; issue 12 item 2).

Run:
    python -m amd_jax.train --config=configs/zones2d.py --workdir=workdirs/zones2d
    python -m amd_jax.sweep --config=configs/zones2d.py --workdir=workdirs/zones2d_sweep --variant_set=zones \\
        --seeds=0,1,2,3,4
Hardware: any; 1 CPU device or 8 simulated ones (XLA_FLAGS=--xla_force_host_platform_device_count=8).

Construction (amd_jax/data/zones2d.py): toy2d's 4 classes x 2 modes; in the teacher's training data the points of
class 0's mode 0 (angle 0) are relabelled class 1 (`zone.flip` of them). The teacher's p(x | 1) thus has a
spurious mode on that region R, and its CFG pulls class-1 samples into R. Ground truth: a sample is in the zone
when it lies within 3 std of R's centre and its label is not 0. The reward proxy (amd_jax/models/zones2d.py) is
the clean log-density with widened modes (`reward.std_scale`) plus a fixed random field (`reward.noise`), never
the ground truth. The evaluation: gt_zone_fraction (every log.sample_every steps and at the end), the proxy's
flag recall / precision, toy2d's precision / recall / SWD / MMD against the clean data; the sweep adds the escape
step (amd_jax/sweep.py). The training step logs gt_zone/xf_minus_x and gt_zone/cfg_minus_xf (the fake and real
teachers' gaps on zone samples) beside gt_out/ (the other samples).
"""

import ml_collections

from amd_jax.config_base import base, teacher


def get_config():
    c = base()
    c.experiment = "zones2d"
    c.method = "amd"
    c.total_steps = 6000
    c.global_batch = 256
    c.data = ml_collections.ConfigDict({"num_classes": 4, "modes_per_class": 2, "radius": 2.0, "std": 0.15, "seed": 0})
    c.zone = ml_collections.ConfigDict(
        {"source_class": 0, "source_mode": 0, "target_class": 1, "flip": 1.0, "radius_std": 3.0})
    c.model = ml_collections.ConfigDict({"hidden": 128, "depth": 3, "prediction_type": "velocity"})
    c.schedule.name = "rectified_flow"
    c.student.timesteps = (1.0,)

    c.teacher = teacher(steps=6000, batch_size=512, lr=2e-3)

    c.dmd.guidance_scale = 2.0
    c.dmd.ttur = 5
    c.optim.student_lr = 1e-4
    c.optim.critic_lr = 1e-4
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0

    c.reward = ml_collections.ConfigDict(
        {"name": "zones2d_proxy", "monitor": True, "std_scale": 2.0, "noise": 1.0, "length": 0.5})
    c.checkpoint.every = 1000
    c.log.every = 100
    c.log.sample_every = 250
    c.eval.num_samples = 4096
    return c
