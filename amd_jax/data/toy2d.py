"""A 2-D class-conditional mixture of Gaussians in which Forbidden Zones can be seen.

`num_classes * modes_per_class` equal Gaussians sit on a ring; class c owns modes c, c + C, c + 2C, ...
(interleaved), so with 2 modes a class's two modes are opposite and the ring's centre, between them, is a
low-density region that a mode-averaging one-step student falls into.

Groups (amd_jax/data/groups.py; `group_size` = K > 1, the distillation's `amd.group_size`): a global batch holds
B / K labels, each on K consecutive rows. Each row's real sample is its own independent draw from p(x | its label):
the GAN's discriminator sees (real row, that row's label), so a real sample must match its row's label, and the K
rows of a group get K different real samples. The teacher trains on ungrouped batches (the task's `grouped`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from amd_jax.data import groups


@dataclasses.dataclass(frozen=True)
class Toy2D:
    num_classes: int = 4
    modes_per_class: int = 2
    radius: float = 2.0
    std: float = 0.15
    seed: int = 0
    group_size: int = 1  # K consecutive rows share a label; 0 or 1 = i.i.d. labels

    def means(self) -> np.ndarray:
        """[C, M, 2] mode centres: mode j of class c at angle 2 pi (c + C j) / (C M)."""
        c, m = self.num_classes, self.modes_per_class
        idx = np.arange(c)[:, None] + c * np.arange(m)[None, :]
        ang = 2 * np.pi * idx / (c * m)
        return self.radius * np.stack([np.cos(ang), np.sin(ang)], -1).astype(np.float32)

    def sample(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        """Real samples x ~ p(x | label)."""
        mode = rng.integers(0, self.modes_per_class, size=labels.shape)
        mu = self.means()[labels, mode]
        return (mu + self.std * rng.standard_normal(mu.shape)).astype(np.float32)

    def log_density(self, x: jax.Array, labels: jax.Array) -> jax.Array:
        """log p(x | label) = log mean_j N(x; mu_{label, j}, std^2 I), float32, [B]."""
        mu = jnp.asarray(self.means())[labels]  # [B, M, 2]
        d2 = jnp.sum((x.astype(jnp.float32)[:, None, :] - mu) ** 2, -1)
        log_n = -0.5 * d2 / self.std**2 - jnp.log(2 * jnp.pi * self.std**2)
        return jax.nn.logsumexp(log_n, axis=1) - jnp.log(float(self.modes_per_class))

    def grouped(self, group_size: int) -> "Toy2D":
        """The same data whose training batches put each label on `group_size` consecutive rows."""
        return dataclasses.replace(self, group_size=group_size)

    def global_batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """The global batch of a training step, a pure function of (seed, step): the data position is the step.

        B / K labels, each repeated on K consecutive rows (K = `group_size`); B must be a multiple of K."""
        k = groups.size(self.group_size, batch_size)
        rng = np.random.default_rng([self.seed, step])
        labels = np.repeat(rng.integers(0, self.num_classes, size=batch_size // k).astype(np.int32), k)
        return {"cond": {"label": labels}, "real": self.sample(rng, labels)}
