"""The sinusoidal timestep embedding every denoiser here uses (the MLP and small UNet, SiT, the SDXL UNet)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def timestep_embedding(t: jax.Array, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
                       max_period: float = 10000.0) -> jax.Array:
    """[N, dim] float32 embedding of N (fractional) timesteps: [cos(t f_k), sin(t f_k)] (flip_sin_to_cos, as
    GLIDE, SiT and SDXL) or [sin, cos], with f_k = max_period^(-k / (dim/2 - freq_shift)), k < dim/2; an odd dim
    gets a zero last column (SiT). freq_shift is diffusers' `freq_shift` (0 for SDXL and SiT)."""
    half = dim // 2
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(max_period) / (half - freq_shift)))
    angles = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    parts = (jnp.cos(angles), jnp.sin(angles)) if flip_sin_to_cos else (jnp.sin(angles), jnp.cos(angles))
    emb = jnp.concatenate(parts, axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2))) if dim % 2 else emb
