"""DMD2's GAN head for the SDXL critic: a small conv head on the UNet's mid-block features."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp


class GanHead(nn.Module):
    """DMD2-style discriminator head on UNet mid-block features (NHWC) -> one logit per sample."""

    hidden: int = 256
    groups: int = 32

    @nn.compact
    def __call__(self, feats):
        h = nn.Conv(self.hidden, (3, 3), padding="SAME", name="conv_in")(feats.astype(jnp.float32))
        h = nn.GroupNorm(num_groups=math.gcd(self.groups, self.hidden), name="norm")(h)
        h = nn.silu(h)
        h = nn.Conv(1, (3, 3), padding="SAME", name="conv_out")(h)
        return jnp.mean(h, axis=(1, 2, 3))
