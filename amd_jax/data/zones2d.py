"""zones2d's data: toy2d's mixture (amd_jax/data/toy2d.py), a Forbidden Zone placed by construction, and the
label-noisy copy the teacher trains on.

The zone R is the disc of `radius_std` standard deviations around one mode of `source_class` (mode `source_mode`).
In the teacher's training data a fraction `flip` of the points drawn from that mode carry the label `target_class`
instead, so the teacher learns p(x | target_class) with a spurious mode on R and its CFG direction
xr_c - xr_u points samples of `target_class` into R. Ground truth (the clean data): R belongs to `source_class`
alone, so a sample is in the Forbidden Zone iff it lies in R and its label is not `source_class` (`in_zone`).
The distillation's own batches (labels, and the GAN's real samples) stay clean.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from amd_jax.data.toy2d import Toy2D


@dataclasses.dataclass(frozen=True)
class Zone:
    source_class: int = 0  # the class that owns the zone's mode
    source_mode: int = 0  # which of its modes is the zone
    target_class: int = 1  # the label the teacher's data gives the flipped points
    flip: float = 1.0  # the fraction of the mode's points relabelled in the teacher's data
    radius_std: float = 3.0  # R's radius in data standard deviations (toy2d's precision radius)

    def centre(self, data: Toy2D) -> np.ndarray:
        """[2] the centre of R: the zone mode's mean."""
        return data.means()[self.source_class, self.source_mode]

    def in_zone(self, data: Toy2D, x, labels):
        """[N] bool, the ground truth: x lies in R and its label is not R's owner. Works on NumPy and jax arrays
        (the training step's probe calls it under jit)."""
        d2 = ((x[:, 0] - self.centre(data)[0]) ** 2 + (x[:, 1] - self.centre(data)[1]) ** 2)
        return (d2 < (self.radius_std * data.std) ** 2) & (labels != self.source_class)


@dataclasses.dataclass(frozen=True)
class NoisyTeacherData:
    """The teacher's training data: clean toy2d batches with the zone mode's points relabelled (`Zone.flip`).

    A pure function of (seed, step), as every pipeline: the flips use their own generator seeded by (seed, step)."""

    clean: Toy2D
    zone: Zone

    def global_batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
        batch = self.clean.global_batch(step, batch_size)
        labels, x = batch["cond"]["label"], batch["real"]
        mu = self.clean.means()[labels]  # [B, M, 2]: each row's own class's modes
        from_mode = (labels == self.zone.source_class) & (
            np.linalg.norm(x[:, None] - mu, axis=-1).argmin(1) == self.zone.source_mode)
        flip = np.random.default_rng([self.clean.seed, step, 1]).random(batch_size) < self.zone.flip
        noisy = np.where(from_mode & flip, self.zone.target_class, labels).astype(np.int32)
        return {"cond": {"label": noisy}, "real": x}
