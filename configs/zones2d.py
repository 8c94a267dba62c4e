"""zones2d: toy2d with a Forbidden Zone by construction (docs/METHOD.md section 4; issue 12 item 2).

Run:
    python -m amd_jax.train --config=configs/zones2d.py --workdir=workdirs/zones2d
    python -m amd_jax.sweep --config=configs/zones2d.py --workdir=workdirs/zones2d_sweep --variant_set=zones \\
        --seeds=0,1,2,3,4
Hardware: any; 1 CPU device or 8 simulated ones (XLA_FLAGS=--xla_force_host_platform_device_count=8).
Time here (2 shared CPU cores): one run of 4000 steps with the teacher's first-use training 59 s (machine load ~2;
the student alone ~190 steps/s); in the sweep below, at load 8-9, 100-120 s per 6000-step run. The 12 x 5 = 60 runs of
the `zones` set took 54 min 54 s as two sweep processes side by side (each given half the variants with --variant),
the teacher copied in from the first run.

Result (measured 2026-12-01, the `zones` sweep, seeds 0-4, final eval on 4096 samples; docs/results/zones2d_*):
- The teacher (DDIM-50, CFG 2) puts 10.4% of all samples in the zone; precision 0.888.
- DMD2 inherits the zone and does not leave it: final gt_zone_fraction 0.063 +- 0.017 (95% interval over seeds);
  the in-training curve (1024 samples every 250 steps) rises from 0 to 0.06-0.09 and does not decay; no run of any
  variant escapes (fraction below 0.01 to the end). In the zone the DMD update |xr_cfg - xf| averages 0.36 against
  0.59 elsewhere, |xf - x| 0.63 against 0.73 (the training step's probe, last 1000 steps, DMD2).
- Paired differences against DMD2 (same seed, 95% interval, * = resolved): gt_zone_fraction amd (soft, s = 0.5,
  RLS) -0.020 +- 0.018 *, amd_hard -0.019 +- 0.016 *, rls_only -0.018 +- 0.019, dsa_only +0.001 +- 0.017; precision
  amd -0.23 +- 0.04 *, amd_hard +0.02 +- 0.06, rls_only +0.045 +- 0.029 *, dsa_only -0.27 +- 0.04 *; SWD amd_hard
  -0.11 +- 0.03 *. Every variant with RLS cuts the zone by about 30% (rls_only alone just misses resolution); DSA
  alone does not move it; soft DSA costs precision; only amd_hard and rls_only keep quality. Nothing escapes: the
  zone is reduced, not emptied. The EMA (0.999) of AMD against DMD2's EMA: zone -0.053 +- 0.003 *, precision -0.09
  +- 0.01 *. Decoupled-DMD (CA at t in [0.5, 0.98]) is much worse here (precision 0.14 DMD2, 0.03 AMD).

Construction (amd_jax/data/zones2d.py): toy2d's 4 classes x 2 modes; in the teacher's training data the points of
class 0's mode 0 (angle 0) are relabelled class 1 (`zone.flip` of them). The teacher's p(x | 1) thus has a
spurious mode on that region R, and its CFG pulls class-1 samples into R. Ground truth: a sample is in the zone
when it lies within 3 std of R's centre and its label is not 0. The reward proxy (amd_jax/tasks/zones2d/models.py) is
the clean log-density with widened modes (`reward.std_scale`) plus a fixed random field (`reward.noise`), never
the ground truth. The evaluation: gt_zone_fraction (every log.sample_every steps and at the end), the proxy's
flag recall / precision, toy2d's precision / recall / SWD / MMD against the clean data; the sweep adds the escape
step (amd_jax/sweep.py). The training step logs gt_zone/xf_minus_x and gt_zone/cfg_minus_xf (the fake and real
teachers' gaps on zone samples) beside gt_out/ (the other samples).
"""

import ml_collections

from amd_jax.config import base, teacher


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

    c.reward.update({"name": "zones2d_proxy", "monitor": True, "std_scale": 2.0, "noise": 1.0, "length": 0.5})
    c.checkpoint.every = 1000
    c.log.every = 100
    c.log.sample_every = 250
    c.eval.num_samples = 4096
    return c
