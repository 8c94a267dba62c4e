"""toy2d: distil a 2-D class-conditional diffusion teacher into a one-step student with DMD2 or AMD.

Run (this CPU, about 3 minutes including the teacher's first-use training):
    python -m amd_jax.train --config=configs/toy2d.py --workdir=workdirs/toy2d
    python -m amd_jax.train --config=configs/toy2d.py --config.method=dmd2 --workdir=workdirs/toy2d_dmd2
Hardware: any; 1 CPU device or 8 simulated ones (XLA_FLAGS=--xla_force_host_platform_device_count=8).
Result: DIR/eval.json (precision, mode coverage, sliced Wasserstein, MMD, mean reward, zone fraction) and
DIR/samples/final.png (samples by class, Forbidden-Zone flags marked). Figures: README.md, "toy2d results".

Data: 4 classes x 2 opposite modes on a ring (radius 2, std 0.15). Teacher: MLP, eps-prediction on SDXL's DDPM
schedule, trained on first use into `teacher.dir` (default DIR/teacher). Reward proxy: the true log p(x | class).
"""

import ml_collections

from amd_jax.config_base import base


def get_config():
    c = base()
    c.experiment = "toy2d"
    c.method = "amd"
    c.total_steps = 1500
    c.global_batch = 256
    c.data = ml_collections.ConfigDict({"num_classes": 4, "modes_per_class": 2, "radius": 2.0, "std": 0.15, "seed": 0})
    c.model = ml_collections.ConfigDict({"hidden": 128, "depth": 3, "prediction_type": "eps"})
    c.schedule.name = "ddpm"
    c.student.timesteps = (999,)

    c.teacher = ml_collections.ConfigDict()
    c.teacher.dir = ""  # '' = WORKDIR/teacher; a shared path lets several runs reuse one teacher
    c.teacher.train_if_missing = True
    c.teacher.steps = 6000
    c.teacher.batch_size = 512
    c.teacher.lr = 2e-3
    c.teacher.label_dropout = 0.1
    c.teacher.seed = 0

    c.dmd.guidance_scale = 2.0
    c.dmd.ttur = 5
    c.optim.student_lr = 1e-4
    c.optim.critic_lr = 1e-4
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0

    c.reward.name = "toy2d_log_density"
    c.checkpoint.every = 500
    c.log.every = 100
    c.log.sample_every = 500
    c.eval.num_samples = 4096
    return c
