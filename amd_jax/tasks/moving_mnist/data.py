"""Moving MNIST batches for training, drawn fresh per step (amd_jax/data/moving_mnist.py's bouncing procedure).

`VideoData.global_batch(step, B)` is a pure function of (seed, step): B labels (K > 1: B / K labels, each on K
consecutive rows), per row an independent digit image of that label, a trajectory and the render. Nothing is
pre-generated, so the data cost no memory and never repeat (a pool of 10k videos would hold 330 MB). The zone
(`Spec.zone_class`, `zone_fraction`, `zone_mode`) applies per batch exactly as `moving_mnist.generate` applies it
per set: of the batch's rows of the zone class, round(fraction * count) are frozen / reversed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from amd_jax.data import groups
from amd_jax.data import moving_mnist as mm


@dataclasses.dataclass(frozen=True)
class VideoData:
    digits: np.ndarray  # float32 [M, S, S] in [0, 1]: the split's digit images, downscaled
    digit_labels: np.ndarray  # int [M]
    spec: mm.Spec
    seed: int = 0
    group_size: int = 1
    num_classes: int = 10

    @property
    def sample_shape(self) -> tuple[int, ...]:
        s = self.spec
        return (s.num_frames, s.canvas, s.canvas, 1)

    def grouped(self, group_size: int) -> "VideoData":
        """The same data whose batches put each label on `group_size` consecutive rows."""
        return dataclasses.replace(self, group_size=group_size)

    def global_batch(self, step: int, batch_size: int) -> dict:
        """{'cond': {'label': int32 [B]}, 'real': float32 [B, T, H, W, 1] in [-1, 1]}."""
        k = groups.size(self.group_size, batch_size)
        rng = np.random.default_rng([self.seed, step])
        labels = np.repeat(rng.integers(0, self.num_classes, batch_size // k), k).astype(np.int32)
        by_label = np.argsort(self.digit_labels, kind="stable")
        count = np.bincount(self.digit_labels, minlength=self.num_classes)
        source = by_label[(np.cumsum(count) - count)[labels] + rng.integers(0, count[labels])]
        zone_digit = mm.zone_membership(rng, labels[:, None], self.spec)
        top_left, _, _ = mm.trajectories(rng, batch_size, self.spec, zone_digit)
        videos = mm.render(self.digits[source][:, None], top_left, self.spec.canvas) * 2.0 - 1.0
        return {"cond": {"label": labels}, "real": videos[..., None].astype(np.float32)}
