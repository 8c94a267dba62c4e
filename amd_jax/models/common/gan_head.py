"""DMD2's GAN heads on the critic's features: an MLP on pooled features [B, F] (the small tasks, SiT) and a conv
head on a UNet's mid-block feature map (SDXL)."""

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


class GANHead(nn.Module):
    """DMD2's classifier branch on the fake teacher's features: features [B, F] -> logit [B]."""

    hidden: int = 128

    @nn.compact
    def __call__(self, feats):
        return nn.Dense(1)(nn.silu(nn.Dense(self.hidden)(feats)))[:, 0]
