"""The toy2d model bundle: the MLP denoiser (amd_jax/models/small/mlp.py) for teacher, critic and student, an MLP
GAN head, and the true log-density as the reward."""

from __future__ import annotations

import jax.numpy as jnp

from amd_jax.data.toy2d import Toy2D
from amd_jax.method.schedules import make_schedule
from amd_jax.models.common.bundle import Models
from amd_jax.models.common.denoiser import Denoiser
from amd_jax.models.common.gan_head import GANHead
from amd_jax.models.small.mlp import MLPDenoiser


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
