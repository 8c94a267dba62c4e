"""DMD2 distribution matching and AMD's DM/CA decomposition (docs/METHOD.md sections 2-4).

Notation: `x` student sample, `xr_c` / `xr_u` real teacher x0 with / without the condition, `xf` fake teacher
(critic) x0 with the condition, `omega` the CFG scale in DMD2's convention xr_cfg = xr_u + omega (xr_c - xr_u).
All functions are pure, reduce in float32 and put stop-gradients exactly where the method does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


def _sample_mean(v: jax.Array) -> jax.Array:
    """Mean over every axis but the batch axis, keeping dims for broadcasting: [B, ...] -> [B, 1, ...]."""
    return jnp.mean(v, axis=tuple(range(1, v.ndim)), keepdims=True)


def cfg(xr_c: jax.Array, xr_u: jax.Array, omega: float) -> jax.Array:
    """Classifier-free guidance in DMD2's convention: xr_cfg = xr_u + omega * (xr_c - xr_u)."""
    xr_c, xr_u = xr_c.astype(jnp.float32), xr_u.astype(jnp.float32)
    return xr_u + omega * (xr_c - xr_u)


NORMALIZERS = ("sample", "batch", "none")


def dmd_normalizer(x: jax.Array, xr_cfg: jax.Array, kind: str = "sample") -> jax.Array:
    """The DMD gradient's normaliser, broadcastable to x.

    sample [DMD2]:  n_i = mean_{C,H,W} |x_i - xr_cfg_i|   (shape [B, 1, ...])
    batch  [choice]: n = mean_{B,C,H,W} |x - xr_cfg|      (one scalar for the global batch)
    none   [choice]: n = 1
    The per-sample form suits images (a mean over thousands of dimensions); for 2-D data it is a mean over two
    numbers and explodes for samples that already sit where the teacher points, hence the other options.
    """
    d = jnp.abs(x.astype(jnp.float32) - xr_cfg)
    if kind == "sample":
        return _sample_mean(d)
    if kind == "batch":
        return jnp.mean(d).reshape((1,) * d.ndim)
    if kind == "none":
        return jnp.ones((1,) * d.ndim, jnp.float32)
    raise ValueError(f"Unknown DMD normalizer {kind!r}: choose one of {NORMALIZERS}.")


def decompose(xr_c: jax.Array, xr_u: jax.Array, xf: jax.Array, omega: float) -> tuple[jax.Array, jax.Array]:
    """AMD Eq. 10: xr_cfg - xf = DM + (omega - 1) CA with DM = xr_c - xf and CA = xr_c - xr_u.

    Returns (dm, ca). The descent direction of the DMD loss is H = dm + (omega - 1) * ca.
    """
    xr_c, xr_u, xf = (a.astype(jnp.float32) for a in (xr_c, xr_u, xf))
    return xr_c - xf, xr_c - xr_u


def dmd_gradient(x, xr_c, xr_u, xf, omega, alpha_delta=None, beta_delta=None, normalizer="sample"):
    """The (stop-gradient) DMD2 gradient, optionally with AMD's Dynamic Score Adaptation.

    DMD2:   grad = (xf - xr_cfg) / n,                 n = mean_{C,H,W} |x - xr_cfg|  (see dmd_normalizer)
    AMD:    grad = -(beta * DM + alpha * (omega - 1) * CA) / n,  alpha = 1 + alpha_delta, beta = 1 + beta_delta

    The AMD form is evaluated as (xf - xr_cfg) - beta_delta * DM - alpha_delta * (omega - 1) * CA, which equals
    the line above and is bit-identical to DMD2 when both deltas are exactly zero (s = 0). Deltas are per-sample
    [B] arrays and are stop-gradient. Returns (grad, n) with grad passed through nan_to_num as in DMD2.
    """
    x = sg(x).astype(jnp.float32)
    xr_c, xr_u, xf = (sg(a).astype(jnp.float32) for a in (xr_c, xr_u, xf))
    xr_cfg = cfg(xr_c, xr_u, omega)
    raw = xf - xr_cfg
    if beta_delta is not None or alpha_delta is not None:
        dm, ca = decompose(xr_c, xr_u, xf, omega)
        if beta_delta is not None:
            raw = raw - _broadcast(sg(beta_delta), dm) * dm
        if alpha_delta is not None:
            raw = raw - _broadcast(sg(alpha_delta), ca) * ((omega - 1.0) * ca)
    n = dmd_normalizer(x, xr_cfg, normalizer)
    return jnp.nan_to_num(raw / n), n


def decoupled_gradient(x, dm_parts, ca_parts, omega, alpha_delta=None, beta_delta=None, normalizer="sample",
                       separate_normalizers=True):
    """The DMD gradient with its DM and CA terms treated apart, as in Decoupled-DMD (docs/METHOD.md section 4).

    dm_parts = (xr_c, xf) at the DM timestep t; ca_parts = (xr_c', xr_u') at the CA timestep t_ca (t_ca = t
    when the CA term has no timestep of its own). With DM = xr_c - xf, CA = xr_c' - xr_u' and
    xr_cfg' = xr_u' + omega (xr_c' - xr_u'):

    separate_normalizers [choice]: grad = -(beta DM / n(x, xr_c) + alpha (omega - 1) CA / n(x, xr_cfg'))
    shared normaliser:             grad = -(beta DM + alpha (omega - 1) CA) / n(x, xr_cfg')

    n(x, target) is dmd_normalizer's kind: DMD2's normaliser is the distance from x to the target of the
    regression, so each term gets the one DMD2 would give it alone: the DM term is DMD at omega = 1, whose target is
    xr_c; the CA term carries the guidance, whose target is xr_cfg' (at its own timestep). Both normalisers come
    from teacher outputs the terms already need. alpha = 1 + alpha_delta, beta = 1 + beta_delta (stop-gradient,
    per sample [B]; None = 1). Each term goes through nan_to_num, so a degenerate normaliser of one term does not
    zero the other. Returns (grad, metrics) with the mean normalisers and the mean |term| of each term.
    """
    x = sg(x).astype(jnp.float32)
    xr_c, xf = (sg(a).astype(jnp.float32) for a in dm_parts)
    xr_c_ca, xr_u_ca = (sg(a).astype(jnp.float32) for a in ca_parts)
    dm, ca = xr_c - xf, (omega - 1.0) * (xr_c_ca - xr_u_ca)
    if beta_delta is not None:
        dm = dm + _broadcast(sg(beta_delta), dm) * dm
    if alpha_delta is not None:
        ca = ca + _broadcast(sg(alpha_delta), ca) * ca
    n_ca = dmd_normalizer(x, cfg(xr_c_ca, xr_u_ca, omega), normalizer)
    n_dm = dmd_normalizer(x, xr_c, normalizer) if separate_normalizers else n_ca
    g_dm, g_ca = jnp.nan_to_num(-dm / n_dm), jnp.nan_to_num(-ca / n_ca)
    metrics = {"dm_normalizer": jnp.mean(n_dm), "ca_normalizer": jnp.mean(n_ca),
               "dm_norm": jnp.mean(jnp.abs(g_dm)), "ca_norm": jnp.mean(jnp.abs(g_ca))}
    return g_dm + g_ca, metrics


def dmd_loss(x: jax.Array, grad: jax.Array) -> jax.Array:
    """loss_dm = 0.5 * mean((x - sg(x - grad))^2): its gradient w.r.t. x is grad / numel(x)."""
    x = x.astype(jnp.float32)
    return 0.5 * jnp.mean((x - sg(x - grad)) ** 2)


def _broadcast(c: jax.Array, like: jax.Array) -> jax.Array:
    c = jnp.asarray(c, jnp.float32)
    return c.reshape(c.shape + (1,) * (like.ndim - c.ndim))
