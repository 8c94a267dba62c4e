"""AMD: reward advantage, Forbidden-Zone mask, Dynamic Score Adaptation and Landscape-Sharpening weights.

docs/METHOD.md section 4. Rewards are per-sample scores of stop-gradient student samples; everything here is
stop-gradient. Called inside a jit over a sharded global batch, every mean below is a global-batch statistic
(XLA inserts the cross-device reductions), never a per-device one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


def group_advantage(rewards, group_size=1, std_floor=0.0, eps=1e-6, clip=1.0):
    """Group-normalised, clipped advantage (paper Eq. 12 structure).

    a_i = (r_i - mean_g r) / (max(std_g r, std_floor) + eps),  a~_i = clip(a_i, -clip, clip).
    A group g is `group_size` consecutive samples (K samples of one prompt); group_size = 1 means the whole
    global batch is one group. std is the population standard deviation. Returns (a~, mean_g, std_g), each [B].
    """
    r = sg(jnp.asarray(rewards, jnp.float32))
    b = r.shape[0]
    k = b if group_size in (0, 1) else group_size
    if b % k:
        raise ValueError(f"group_size {group_size} does not divide the batch of {b} rewards.")
    g = r.reshape(b // k, k)
    mean = jnp.mean(g, axis=1, keepdims=True)
    std = jnp.sqrt(jnp.mean((g - mean) ** 2, axis=1, keepdims=True))
    a = (g - mean) / (jnp.maximum(std, std_floor) + eps)
    a = jnp.clip(a, -clip, clip)
    expand = lambda v: jnp.broadcast_to(v, g.shape).reshape(b)
    return a.reshape(b), expand(mean), expand(std)


def zone_mask(advantage, tau):
    """Forbidden-Zone flag m_i = 1[a~_i < -tau] as float32 (1 = likely stuck in a Forbidden Zone)."""
    return (sg(advantage) < -tau).astype(jnp.float32)


def dsa_deltas(advantage, mask, s, mode="soft"):
    """Dynamic Score Adaptation coefficients as deltas from 1: alpha = 1 + alpha_delta, beta = 1 + beta_delta.

    soft:  alpha = 1 + s a~,   beta = 1 - s a~     (both in [1 - s, 1 + s] for |a~| <= 1)
    hard:  alpha = 1 - s m,    beta = 1 + s m      (only flagged samples change)
    Low reward -> more distribution matching (beta up), less CFG pull (alpha down). s = 0 gives exact zeros.
    """
    if mode == "soft":
        d = s * sg(advantage).astype(jnp.float32)
    elif mode == "hard":
        d = -s * sg(mask).astype(jnp.float32)
    else:
        raise ValueError(f"Unknown DSA mode {mode!r}: choose 'soft' or 'hard'.")
    return d, -d


def rls_weights(advantage, mask, lam, mode="hard"):
    """Repulsive Landscape Sharpening: per-sample critic-loss weights, renormalised to mean 1 over the batch.

    hard: w_i = 1 + lam * m_i;  soft: w_i = 1 - lam * a~_i (needs lam < 1 / max|a~| to stay positive).
    w <- w / mean(w). With lam = 0 every weight is exactly 1.0.
    """
    if mode == "hard":
        w = 1.0 + lam * sg(mask).astype(jnp.float32)
    elif mode == "soft":
        w = 1.0 - lam * sg(advantage).astype(jnp.float32)
    else:
        raise ValueError(f"Unknown RLS mode {mode!r}: choose 'hard' or 'soft'.")
    return w / jnp.mean(w)
