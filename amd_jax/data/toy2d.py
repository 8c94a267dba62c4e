"""A 2-D class-conditional mixture of Gaussians in which Forbidden Zones can be seen.

`num_classes * modes_per_class` equal Gaussians sit on a ring; class c owns modes c, c + C, c + 2C, ...
(interleaved), so with 2 modes a class's two modes are opposite and the ring's centre, between them, is a
low-density region that a mode-averaging one-step student falls into.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Toy2D:
    num_classes: int = 4
    modes_per_class: int = 2
    radius: float = 2.0
    std: float = 0.15
    seed: int = 0

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

    def global_batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """The global batch of a training step, a pure function of (seed, step): the data position is the step."""
        rng = np.random.default_rng([self.seed, step])
        labels = rng.integers(0, self.num_classes, size=batch_size).astype(np.int32)
        return {"cond": {"label": labels}, "real": self.sample(rng, labels)}
