"""Small MLP denoisers for 2-D data, a GAN head for DMD2's discriminator, and the toy2d model bundle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from amd_jax.data.toy2d import Toy2D
from amd_jax.method.schedules import make_schedule
from amd_jax.models.common.bundle import Models
from amd_jax.models.common.denoiser import Denoiser


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of (possibly fractional) timesteps on a 0..1000 scale."""
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], -1)


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


class GANHead(nn.Module):
    """DMD2's classifier branch on the fake teacher's features: features [B, F] -> logit [B]."""

    hidden: int = 128

    @nn.compact
    def __call__(self, feats):
        return nn.Dense(1)(nn.silu(nn.Dense(self.hidden)(feats)))[:, 0]


def build(config, data: Toy2D) -> Models:
    """The toy2d bundle: one MLP architecture for teacher, critic and student; reward = true log p(x | c)."""
    schedule = make_schedule(config.schedule.name, **config.schedule.kwargs.to_dict())
    net = MLPDenoiser(
        num_classes=data.num_classes,
        hidden=config.model.hidden,
        depth=config.model.depth,
        time_scale=1.0 if schedule.discrete else 1000.0,
    )

    def apply_fn(params, x_t, t, cond, features=False):
        return net.apply({"params": params}, x_t, t, cond["label"], features=features)

    def null_cond(cond):
        return {"label": jnp.full_like(cond["label"], data.num_classes)}

    denoiser = Denoiser(apply_fn, null_cond, schedule, config.model.prediction_type)

    def init_denoiser(rng):
        x = jnp.zeros((1, 2), jnp.float32)
        t = jnp.zeros((1,), jnp.float32)
        return net.init(rng, x, t, jnp.zeros((1,), jnp.int32))["params"]

    head = GANHead(config.model.hidden)

    def init_gan_head(rng):
        return head.init(rng, jnp.zeros((1, config.model.hidden), jnp.float32))["params"]

    def reward(params, x, cond):
        del params  # the toy reward is analytic
        return data.log_density(x, cond["label"])

    return Models(
        student=denoiser,
        critic=denoiser,
        teacher=denoiser,
        init_denoiser=init_denoiser,
        gan_head=lambda params, feats: head.apply({"params": params}, feats),
        init_gan_head=init_gan_head,
        reward=reward,
        sample_shape=(2,),
    )
