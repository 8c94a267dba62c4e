"""A small class-conditional conv UNet (MNIST, digits): 2-3 resolution levels of GroupNorm + SiLU residual blocks,
no attention (cheap on a CPU), conditioned on the timestep and a class embedding with one extra 'null' label
(index num_classes) for classifier-free guidance. ``features=True`` also returns the mid-block activations,
average-pooled to [B, C], for DMD2's GAN head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from amd_jax.models.common.embeddings import timestep_embedding


def _gn(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(8, ch))


class ResBlock(nn.Module):
    ch: int

    @nn.compact
    def __call__(self, x, emb):
        h = nn.Conv(self.ch, (3, 3))(nn.silu(_gn(x.shape[-1])(x)))
        h = h + nn.Dense(self.ch)(emb)[:, None, None, :]
        h = nn.Conv(self.ch, (3, 3))(nn.silu(_gn(self.ch)(h)))
        skip = x if x.shape[-1] == self.ch else nn.Conv(self.ch, (1, 1))(x)
        return skip + h


class UNet(nn.Module):
    """(x_t [B,H,W,C], t [B], label [B]) -> native prediction [B,H,W,C]; label == num_classes is 'null'.

    Each of ``channels`` is one resolution level (H, H/2, ...); H must be divisible by 2**(len(channels)-1).
    """

    num_classes: int
    channels: tuple = (32, 64, 64)
    emb_dim: int = 128
    time_scale: float = 1.0  # 1 for integer timesteps, 1000 for t in [0, 1]

    @nn.compact
    def __call__(self, x, t, label, features=False):
        emb = timestep_embedding(t * self.time_scale, self.emb_dim)
        emb = nn.Dense(self.emb_dim)(nn.silu(nn.Dense(self.emb_dim)(emb)))
        emb = nn.silu(emb + nn.Embed(self.num_classes + 1, self.emb_dim)(label))
        h = nn.Conv(self.channels[0], (3, 3))(x.astype(jnp.float32))
        skips = []
        for i, ch in enumerate(self.channels):
            h = ResBlock(ch)(h, emb)
            skips.append(h)
            if i < len(self.channels) - 1:
                h = nn.Conv(ch, (3, 3), strides=(2, 2))(h)
        h = ResBlock(self.channels[-1])(h, emb)
        feats = jnp.mean(h, axis=(1, 2))
        for i, ch in reversed(list(enumerate(self.channels))):
            skip = skips.pop()
            if h.shape[1:3] != skip.shape[1:3]:
                h = jax.image.resize(h, (h.shape[0], *skip.shape[1:3], h.shape[-1]), "nearest")
            h = ResBlock(ch)(jnp.concatenate([h, skip], -1), emb)
        out = nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(nn.silu(_gn(h.shape[-1])(h)))
        return (out, feats) if features else out
