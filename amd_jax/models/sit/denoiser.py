"""The SiT network (models/sit/network.py) as a project denoiser: its apply_fn in the project's RectifiedFlow
convention, the unconditional branch's cond and the GAN head's pooled features.

The network sees SiT's float t_sit in [0, 1] with t_sit = 1 meaning data (x_t = t x1 + (1 - t) x0, x0 = noise) and
predicts SiT's velocity x1 - x0; the project's RectifiedFlow has t = 1 noise and u = eps - x0, so the adapter
feeds t_sit = 1 - t and returns u = -v_sit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from amd_jax.errors import ConfigError
from amd_jax.models.sit.network import SiT, SiTConfig


def denoiser_apply(cfg: SiTConfig):
    """apply_fn(params, x_t, t, cond, features=False) of `SiT(cfg)` for `amd_jax.models.common.denoiser.Denoiser` with
    the project's RectifiedFlow schedule and prediction_type 'velocity'; cond = {'label': int [B]}."""
    net = SiT(cfg)
    return rectified_flow_apply(
        lambda params, x, t_sit, cond, features: net.apply({"params": params}, x, t_sit, cond["label"], features))


def rectified_flow_apply(sit_fn):
    """A SiT-convention fn(params, x, t_sit, cond, features) -> SiT velocity (and features), as an apply_fn in the
    project's RectifiedFlow convention (t = 1 noise, t = 0 data, u = eps - x0).

    SiT's x_t = t_sit x1 + (1 - t_sit) x0 (x1 data, x0 noise) is the same point as RectifiedFlow's
    (1 - t) x0 + t eps when t_sit = 1 - t, and SiT's velocity x1 - x0 = data - noise = -u.
    """

    def apply_fn(params, x_t, t, cond, features=False):
        out = sit_fn(params, x_t, 1.0 - jnp.asarray(t, jnp.float32), cond, features)
        return (-out[0], out[1]) if features else -out

    return apply_fn


def pool_features(feats: jax.Array) -> jax.Array:
    """The token features of `features=True` [B, N, D] -> [B, D] float32 (mean over tokens), for a GAN head."""
    return jnp.mean(feats.astype(jnp.float32), axis=1)


def null_cond(cfg: SiTConfig):
    """cond -> the unconditional branch's cond {'label': num_classes [B]} (only the key the network reads)."""
    if not cfg.has_null_class:
        raise ConfigError(f"This SiT has no null class (class_dropout_prob={cfg.class_dropout_prob}): it cannot "
                          "be guided. Use a checkpoint trained with label dropout (class_dropout_prob > 0).")

    def fn(cond):
        return {"label": jnp.full_like(cond["label"], cfg.num_classes)}

    return fn
