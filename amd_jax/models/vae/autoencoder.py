"""SDXL VAE (diffusers' FlaxAutoencoderKL): latents <-> images, NCHW, float32 outputs.

decode: image = D(latents / scaling_factor), clipped to [-1, 1] unless clip=False.
encode: latents = scaling_factor * (posterior mean, or a posterior sample when an rng is given).
SDXL's scaling_factor is 0.13025 (read from vae/config.json). Keep the SDXL VAE params in float32: the
original SDXL VAE overflows in float16.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SDXL_SCALING_FACTOR = 0.13025


def scaling_factor(module) -> float:
    return float(module.scaling_factor)


def decode(module, params, latents: jax.Array, clip: bool = True) -> jax.Array:
    """Scaled latents [B, 4, h, w] -> images [B, 3, 8h, 8w] (for SDXL) in [-1, 1], float32."""
    z = latents.astype(jnp.float32) / scaling_factor(module)
    z = jnp.transpose(z, (0, 2, 3, 1))  # pass NHWC: diffusers guesses the layout from the last axis
    img = module.apply({"params": params}, z.astype(module.dtype), method=module.decode).sample
    img = img.astype(jnp.float32)
    return jnp.clip(img, -1.0, 1.0) if clip else img


def encode(module, params, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Images [B, 3, H, W] in [-1, 1] -> scaled latents (posterior mean, or a sample with `rng`), float32."""
    dist = module.apply({"params": params}, images.astype(module.dtype), method=module.encode).latent_dist
    z = dist.mean if rng is None else dist.sample(rng)  # NHWC inside diffusers' Flax VAE
    return jnp.transpose(z.astype(jnp.float32), (0, 3, 1, 2)) * scaling_factor(module)
