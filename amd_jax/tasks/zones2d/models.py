"""zones2d's networks: toy2d's MLP bundle (amd_jax/tasks/toy2d/models.py) with an imperfect reward proxy and the
ground-truth Forbidden Zone attached (Models.gt_zone, for the training step's probe).

The reward proxy is never the ground truth the evaluation uses: it is the clean data's log p(x | label) with every
mode's std widened by `std_scale` (a misspecified density), plus a fixed random smooth field of standard deviation
`noise` and length scale `length` (64 random Fourier features, seeded by `seed`). It ranks samples by a density,
not by zone membership, and its noise reorders samples of similar density.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from amd_jax.data.toy2d import Toy2D
from amd_jax.data.zones2d import Zone
from amd_jax.tasks.toy2d import models as toy2d
from amd_jax.models.common.bundle import Models

_FEATURES = 64


def proxy_reward(data: Toy2D, std_scale: float, noise: float, length: float, seed: int = 0):
    """(x [B, 2], labels [B]) -> [B] float32: the tempered clean log-density plus the fixed random field."""
    widened = dataclasses.replace(data, std=data.std * std_scale)
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.standard_normal((2, _FEATURES)) / length, jnp.float32)
    b = jnp.asarray(rng.uniform(0, 2 * np.pi, _FEATURES), jnp.float32)

    def reward(x, labels):
        field = jnp.sqrt(2.0 / _FEATURES) * jnp.sum(jnp.cos(x.astype(jnp.float32) @ w + b), -1)
        return widened.log_density(x, labels) + noise * field

    return reward


def build(config, data: Toy2D, zone: Zone) -> Models:
    """toy2d's bundle with the proxy reward (config.reward.std_scale/noise/length) and the zone's ground truth."""
    r = config.reward
    reward = proxy_reward(data, r.std_scale, r.noise, r.length)
    return dataclasses.replace(
        toy2d.build(config, data),
        reward=lambda params, x, cond: reward(x, cond["label"]),
        gt_zone=lambda x, cond: zone.in_zone(data, x, cond["label"]),
    )
