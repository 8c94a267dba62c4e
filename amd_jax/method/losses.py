"""The critic's (fake teacher's) denoising loss and DMD2's GAN terms."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def denoising_loss(pred, tgt, weights=None):
    """Denoising loss of a network's native parameterisation: mean over all elements of w_i (pred - target)^2.

    DMD2's critic loss is the unweighted mean((pred - target)^2); Repulsive Landscape Sharpening passes
    per-sample weights w [B] with mean 1. The weighted form multiplies before the single global mean, so
    w = 1.0 gives a bit-identical loss.
    """
    sq = (pred.astype(jnp.float32) - jax.lax.stop_gradient(tgt).astype(jnp.float32)) ** 2
    if weights is not None:
        sq = sq * jnp.asarray(weights, jnp.float32).reshape((-1,) + (1,) * (sq.ndim - 1))
    return jnp.mean(sq)


def gan_generator_loss(logits_fake):
    """DMD2 generator GAN term: mean softplus(-D(fake))."""
    return jnp.mean(jax.nn.softplus(-logits_fake.astype(jnp.float32)))


def gan_critic_loss(logits_fake, logits_real):
    """DMD2 discriminator term: mean softplus(D(fake)) + mean softplus(-D(real))."""
    return jnp.mean(jax.nn.softplus(logits_fake.astype(jnp.float32))) + jnp.mean(
        jax.nn.softplus(-logits_real.astype(jnp.float32))
    )
