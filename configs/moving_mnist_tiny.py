"""moving_mnist_tiny: configs/moving_mnist.py's code path at test size (tests/test_moving_mnist_task.py): a 1-block
Wan of width 32 on 4 frames of 32x32, a 100-step teacher, 4 distillation steps; the numbers mean nothing.

Run (this CPU, 1 device; measured: train 2 min 54 s wall in a fresh folder at load average 5-6, 40 s of it
compilation; tests/test_moving_mnist_task.py, train + evaluate + its checks, 120 s cold, 84 s warm):
    python -m amd_jax.train --config=configs/moving_mnist_tiny.py --workdir=workdirs/moving_mnist_tiny
    python -m amd_jax.evaluate --config=configs/moving_mnist_tiny.py --workdir=workdirs/moving_mnist_tiny
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import moving_mnist  # noqa: E402


def get_config():
    c = moving_mnist.get_config()
    c.total_steps, c.global_batch = 4, 16
    c.data.num_frames = 4
    c.model.update({"num_heads": 2, "head_dim": 16, "ffn_dim": 64, "num_layers": 1, "text_dim": 16, "freq_dim": 32,
                    "gan_hidden": 16})
    c.teacher.steps, c.teacher.batch_size = 100, 16
    c.optim.warmup_steps = 2
    c.mesh.shape = (1, 1)
    c.reward.test_videos = 100
    c.checkpoint.every = 4
    c.log.every, c.log.sample_every = 2, 4
    c.eval.num_samples = 64
    c.eval.classifier_steps = 100
    c.eval.reference_videos = 64
    c.eval.teacher_num_samples, c.eval.teacher_steps = 20, 4
    c.eval.grid_per_class = 1
    c.eval.grid_scale = 1
    return c
