"""The Wan transformer (models/wan/transformer.py) as a project denoiser: its apply_fn in the project's
RectifiedFlow convention, the unconditional branch's cond, the GAN head's pooled features, and the Denoiser.

Wan2.1 is trained with diffusers' FlowMatch convention: x_t = (1 - sigma) x0 + sigma noise (FlowMatchEulerDiscrete-
Scheduler.scale_noise), the network sees timestep = sigma * 1000 (num_train_timesteps) and predicts the velocity
v = noise - x0 (its Euler step is x_next = x_t + (sigma_next - sigma) v). That is the project's RectifiedFlow with
t = sigma and u = eps - x0 exactly, so the adapter only scales the time: timestep = 1000 t, and returns v unchanged
(no sign flip, unlike SiT's reversed time). Wan's timestep shift sigma = shift s / (1 + (shift - 1) s) lives in the
schedule (method/schedules.py ShiftedRectifiedFlow): it decides which t are drawn, not how a t is read.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from amd_jax.errors import ConfigError
from amd_jax.method.schedules import ShiftedRectifiedFlow
from amd_jax.models.common.attention import AttentionCore
from amd_jax.models.common.denoiser import Denoiser
from amd_jax.models.wan.transformer import WanConfig, WanTransformer

NUM_TRAIN_TIMESTEPS = 1000  # diffusers' scheduler config of Wan2.1: timestep = sigma * 1000


def flow_match_apply(wan_fn):
    """A Wan-convention fn(params, x, timestep, cond, features) -> velocity noise - x0 (and features), as an
    apply_fn in the project's RectifiedFlow convention (t = sigma in [0, 1], u = eps - x0): timestep = 1000 t."""

    def apply_fn(params, x_t, t, cond, features=False):
        return wan_fn(params, x_t, NUM_TRAIN_TIMESTEPS * jnp.asarray(t, jnp.float32), cond, features)

    return apply_fn


def denoiser_apply(cfg: WanConfig, core: AttentionCore = AttentionCore(), sequence=None):
    """apply_fn(params, x_t, t, cond, features=False) of `WanTransformer(cfg, core, sequence)`; cond = {'text':
    umT5 embeddings [B, L, text_dim]}, x_t channels-last latents [B, F, H, W, C]."""
    net = WanTransformer(cfg, core, sequence)
    return flow_match_apply(
        lambda params, x, timestep, cond, features: net.apply({"params": params}, x, timestep, cond["text"], features))


def null_cond(negative_text: jax.Array):
    """cond -> the unconditional branch's cond {'text': the negative prompt's embeddings} (Wan's CFG runs the
    negative prompt, by default the empty one, through umT5: not zeros), `negative_text` [L, text_dim] or
    [1, L, text_dim], broadcast over the batch."""
    negative_text = jnp.asarray(negative_text)
    if negative_text.ndim == 3 and negative_text.shape[0] == 1:
        negative_text = negative_text[0]
    if negative_text.ndim != 2:
        raise ConfigError(f"Wan's negative prompt embeddings must be [L, text_dim], got {tuple(negative_text.shape)}: "
                          "encode one negative prompt (e.g. '') with the umT5 encoder.")

    def fn(cond):
        text = cond["text"]
        if text.shape[1:] != negative_text.shape:
            raise ConfigError(f"the negative prompt embeddings {tuple(negative_text.shape)} do not match the "
                              f"prompts' {tuple(text.shape[1:])}: encode both to the same length (Wan pads to 512).")
        return {"text": jnp.broadcast_to(negative_text.astype(text.dtype), text.shape)}

    return fn


def pool_features(feats: jax.Array) -> jax.Array:
    """The token features of `features=True` [B, N, D] -> [B, D] float32 (mean over tokens), for a GAN head."""
    return jnp.mean(feats.astype(jnp.float32), axis=1)


def make_denoiser(cfg: WanConfig, negative_text: jax.Array, shift: float = 3.0, core: AttentionCore = AttentionCore(),
                  sequence=None) -> Denoiser:
    """The Wan transformer as a project Denoiser: ShiftedRectifiedFlow(shift) (3.0 for 480P, 5.0 for 720P, as
    diffusers' Wan pipeline documents), prediction_type 'velocity'."""
    return Denoiser(denoiser_apply(cfg, core, sequence), null_cond(negative_text), ShiftedRectifiedFlow(shift),
                    "velocity")
