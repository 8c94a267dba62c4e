"""A residual MLP denoiser for 2-D points (toy2d, zones2d)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from amd_jax.models.common.embeddings import timestep_embedding


class MLPDenoiser(nn.Module):
    """Residual MLP: (x_t [B,2], t [B], label [B]) -> native prediction [B,2]; label == num_classes is 'null'."""

    num_classes: int
    hidden: int = 128
    depth: int = 3
    time_scale: float = 1.0  # 1 for integer timesteps, 1000 for t in [0, 1]

    @nn.compact
    def __call__(self, x, t, label, features=False):
        emb = nn.Dense(self.hidden)(timestep_embedding(t * self.time_scale, self.hidden))
        emb = emb + nn.Embed(self.num_classes + 1, self.hidden)(label)
        h = nn.Dense(self.hidden)(x.astype(jnp.float32)) + emb
        for _ in range(self.depth):
            h = h + nn.Dense(self.hidden)(nn.silu(nn.LayerNorm()(h)))
        out = nn.Dense(x.shape[-1])(nn.silu(h))
        return (out, h) if features else out
