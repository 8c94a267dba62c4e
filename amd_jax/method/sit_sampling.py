"""SiT's samplers as pure JAX functions of a velocity function: the ODE (Euler, Heun) and SiT's SDE, plus SiT's CFG.

Convention of every function here: the project's RectifiedFlow (amd_jax/method/schedules.py), x_t = (1 - t) x0 +
t eps, t = 1 noise, t = 0 data, velocity u(x, t) = eps - x0 (what `amd_jax.models.sit.denoiser.denoiser_apply` returns).
`velocity_fn(x, t)` takes x [B, ...] and t [B] and returns u (float32). Samplers start from noise z at t = 1 and
return the sample at t = 0.

SiT's own time runs the other way (transport/path.py ICPlan: x_s = s x1 + (1 - s) x0, s = 1 data, velocity
v = x1 - x0), so inside: s = 1 - t and v = -u. The SDE follows SiT's Sampler.sample_sde with the settings of its
sample.py / sample_ddp.py command line (the ones SiT's FID-50K numbers use; the paper's 2.06 is its SDE sampler,
250 steps, cfg 1.5):
    diffusion_form 'sigma': w(s) = norm * (1 - s), norm 1;   score(x, s) = (s v - x) / (1 - s)
    drift(x, s) = v + w(s) score(x, s)
    Euler-Maruyama on s_k = linspace(0, 1 - last_step_size, num_steps): num_steps - 1 steps of
        x <- x + drift dt + sqrt(2 w(s_k)) sqrt(dt) z,   dt = s_1 - s_0
    then SiT's last step at s = 1 - last_step_size (default 'Mean': x + drift * last_step_size, no noise).
So num_steps counts network evaluations (250 in SiT) and the trajectory ends exactly at s = 1 (data).
The ODE here is fixed-step on t_k = linspace(1, 0, num_steps + 1) (SiT's sample.py default is the adaptive dopri5
of torchdiffeq, which is not reproduced); Heun is the explicit trapezoid (2 evaluations per step, also at t = 0,
where a velocity network is finite).

CFG, as SiT's `forward_with_cfg`: one batched call on x and x with cond and null (rows interleaved, as
Denoiser.x0_cond_uncond, so a batch-sharded x stays on its devices; SiT concatenates, the result is the same),
guided = uncond + scale (cond - uncond) on the first `guided_channels` channels only (SiT's default 3 "for exact reproducibility", last axis
here, NHWC), the conditional prediction on the rest; guided_channels=None guides every channel (the standard
form). SiT's sample_ddp.py uses the plain conditional model when scale <= 1, which scale = 1 gives here exactly.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x [B, ...], t [B]) -> u = eps - x0
LAST_STEPS = ("Mean", "Euler", "Tweedie", None)


def _bcast(c: jax.Array, like: jax.Array) -> jax.Array:
    return jnp.reshape(c, c.shape + (1,) * (like.ndim - c.ndim))


def _t(value, batch: int) -> jax.Array:
    return jnp.full((batch,), value, jnp.float32)


# ------------------------------------------------------------------------------------------------------- ODE
def ode_sample(velocity_fn: VelocityFn, z: jax.Array, num_steps: int, method: str = "heun") -> jax.Array:
    """Deterministic flow from noise z (t = 1) to data (t = 0) in `num_steps` fixed steps of Euler or Heun."""
    if method not in ("euler", "heun"):
        raise ValueError(f"method={method!r}: use 'euler' or 'heun'.")
    ts = jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)
    batch = z.shape[0]

    def body(k, x):
        t, t_next = ts[k], ts[k + 1]
        u = velocity_fn(x, _t(t, batch))
        x_euler = x + (t_next - t) * u
        if method == "euler":
            return x_euler
        return x + 0.5 * (t_next - t) * (u + velocity_fn(x_euler, _t(t_next, batch)))

    return jax.lax.fori_loop(0, num_steps, body, z.astype(jnp.float32))


# ------------------------------------------------------------------------------------------------------- SDE
def sit_velocity(velocity_fn: VelocityFn) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """SiT's v(x, s) = x1 - x0 at SiT time s from the project's u(x, t): v = -u(x, 1 - s)."""
    return lambda x, s: -velocity_fn(x, 1.0 - s)


def sit_score(v: jax.Array, x: jax.Array, s: jax.Array) -> jax.Array:
    """SiT's ICPlan.get_score_from_velocity: alpha = s, sigma = 1 - s -> score = (s v - x) / (1 - s)."""
    s = _bcast(s, x)
    return (s * v - x) / (1.0 - s)


def sde_sample(velocity_fn: VelocityFn, z: jax.Array, rng: jax.Array, num_steps: int = 250,
               diffusion_norm: float = 1.0, last_step: str | None = "Mean", last_step_size: float = 0.04) -> jax.Array:
    """SiT's SDE sampler (Euler-Maruyama, its sample.py defaults): noise z (t = 1) -> data (t = 0).

    num_steps network evaluations: num_steps - 1 stochastic steps then `last_step` ('Mean': drift only, SiT's
    default; 'Euler': velocity only; 'Tweedie': x / alpha + sigma^2 / alpha * score; None: no last step and the
    grid runs to s = 1). The diffusion coefficient is SiT's command-line default form 'sigma', w = norm (1 - s)
    (SiT's other forms are not provided).
    """
    if last_step not in LAST_STEPS:
        raise ValueError(f"last_step={last_step!r}: use one of {LAST_STEPS}.")
    last_step_size = last_step_size if last_step is not None else 0.0
    v_fn, batch = sit_velocity(velocity_fn), z.shape[0]
    ss = jnp.linspace(0.0, 1.0 - last_step_size, num_steps, dtype=jnp.float32)
    dt = ss[1] - ss[0]

    def diffusion(s):
        return diffusion_norm * (1.0 - s)

    def drift(x, s):
        v = v_fn(x, s)
        return v + _bcast(diffusion(s), x) * sit_score(v, x, s)

    def body(k, x):
        s = _t(ss[k], batch)
        dw = jax.random.normal(jax.random.fold_in(rng, k), x.shape, jnp.float32) * jnp.sqrt(dt)
        return x + drift(x, s) * dt + jnp.sqrt(2.0 * _bcast(diffusion(s), x)) * dw

    x = jax.lax.fori_loop(0, num_steps - 1, body, z.astype(jnp.float32))
    s_last = _t(ss[-1], batch)
    if last_step == "Mean":
        return x + drift(x, s_last) * last_step_size
    if last_step == "Euler":
        return x + v_fn(x, s_last) * last_step_size
    if last_step == "Tweedie":
        alpha, sigma = _bcast(s_last, x), _bcast(1.0 - s_last, x)
        return x / alpha + sigma**2 / alpha * sit_score(v_fn(x, s_last), x, s_last)
    return x


# ------------------------------------------------------------------------------------------------------- CFG
def guided_velocity(velocity_fn: Callable[[jax.Array, jax.Array, Any], jax.Array], cond: Any, null: Any,
                    scale: float, guided_channels: int | None = 3) -> VelocityFn:
    """SiT's classifier-free guidance as a VelocityFn: `velocity_fn(x, t, cond)` is called once on the doubled
    batch (row i with cond, then row i with null); the first `guided_channels` channels (last axis) get uncond +
    scale (cond - uncond), the others the conditional prediction (None: every channel guided). Linear, so the
    same in u or SiT's v. `null` holds the keys the network reads (e.g. `amd_jax.models.sit.denoiser.null_cond(cfg)(cond)`).
    """

    def interleave(a, b):
        return jnp.stack([a, b], axis=1).reshape((-1,) + a.shape[1:])

    def fn(x, t):
        both = {k: jax.tree_util.tree_map(interleave, cond[k], null[k]) for k in null}
        out = velocity_fn(interleave(x, x), interleave(t, t), both)
        out = out.reshape((-1, 2) + out.shape[1:])
        u_c, u_u = out[:, 0], out[:, 1]
        guided = u_u + scale * (u_c - u_u)
        if guided_channels is None:
            return guided
        return jnp.concatenate([guided[..., :guided_channels], u_c[..., guided_channels:]], axis=-1)

    return fn
