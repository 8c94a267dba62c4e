"""mnist_sit: configs/mnist.py with a SiT transformer (amd_jax/models/sit/network.py) instead of the UNet, for teacher,
critic and student: the transformer path of the ImageNet setting (configs/sit_xl2.py) on real data, on this CPU.

Run (the teacher is trained on first use into WORKDIR/teacher; reward and held-out classifier as configs/mnist.py):
    python -m amd_jax.train --config=configs/mnist_sit.py --workdir=workdirs/mnist_sit
    python -m amd_jax.sweep --config=configs/mnist_sit.py --workdir=workdirs/mnist_sit_bench --variant_set=main
SiT on 28x28x1 pixels: patch 7 (4 x 4 = 16 tokens; chosen for this CPU's time), the model.sit block below; rectified-flow velocity through the
same adapter as the ImageNet SiT (SiT's own time and sign conventions, see amd_jax/models/sit/denoiser.py).

MEASURED (this 2-core CPU shared with other jobs, load 5-15; the sweep command above, seeds 0-2, 53 min wall):
  * teacher: 2000 steps in 12 min, loss 0.31; 50-step DDIM at CFG 2 (1024 samples): FID 268, class accuracy 0.29,
    precision 0.77, recall 0.30: a poor teacher (the UNet of configs/mnist.py: FID 29.6, accuracy 0.995).
  * distillation: ~0.35 s per iteration, ~4 min per 600-iteration run; FID (4096 samples) DMD2 335.6 +- 43,
    AMD 330.8 +- 5.1, paired AMD - DMD2 -4.8 +- 42 (not resolved). README "MNIST with a SiT transformer".
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(__file__))
import mnist  # noqa: E402


def get_config():
    c = mnist.get_config()
    c.model.net = "sit"
    # patch 7: 4 x 4 = 16 tokens of 49 pixels; 3.1 GFLOP per teacher training step at batch 64 (the UNet: 9.0; XLA cost analysis)
    c.model.sit = ml_collections.ConfigDict({"hidden_size": 96, "depth": 4, "num_heads": 4, "patch_size": 7})
    c.model.gan_hidden = 64
    c.teacher.steps = 2000
    return c
