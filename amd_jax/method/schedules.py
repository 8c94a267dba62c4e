"""Noise schedules and network parameterisations, all in float32.

Every schedule describes the forward process

    x_t = alpha(t) * x0 + sigma(t) * eps,        eps ~ N(0, I)

and its time derivatives (needed by flow-velocity networks). A network's native output is one of

    'eps'       eps
    'x0'        x0
    'v'         v = alpha * eps - sigma * x0                      (Salimans & Ho, v-prediction)
    'velocity'  u = d x_t / dt = alpha'(t) * x0 + sigma'(t) * eps (flow matching: SiT, Wan, SD3)

`to_x0` and `target` convert between them for any schedule, so the method never needs to know a
network's parameterisation. Time `t` is an integer timestep for `DiscreteDDPM` and a float in
[0, 1] for the continuous schedules; `sample_t` draws it from a fraction range [lo, hi] of the
schedule's time axis (DMD2's `min_step_percent` / `max_step_percent`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

PREDICTION_TYPES = ("eps", "x0", "v", "velocity")


def _per_sample(c: jax.Array, like: jax.Array) -> jax.Array:
    """Broadcast a per-sample coefficient [B] against a batch `like` [B, ...]."""
    c = jnp.asarray(c, jnp.float32)
    return c.reshape(c.shape + (1,) * (like.ndim - c.ndim))


@dataclasses.dataclass(frozen=True)
class DiscreteDDPM:
    """SDXL / DDPM discrete schedule with scaled-linear betas.

    beta_i = (sqrt(b0) + i / (T-1) * (sqrt(b1) - sqrt(b0)))^2,  abar_t = prod_{i<=t} (1 - beta_i),
    alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), t in {0, ..., T-1}.
    """

    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_timesteps: int = 1000
    discrete: bool = dataclasses.field(default=True, init=False)

    def alphas_cumprod(self) -> np.ndarray:
        betas = np.linspace(self.beta_start**0.5, self.beta_end**0.5, self.num_timesteps, dtype=np.float64) ** 2
        return np.cumprod(1.0 - betas)

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        abar = jnp.asarray(self.alphas_cumprod(), jnp.float32)[jnp.asarray(t, jnp.int32)]
        return jnp.sqrt(abar), jnp.sqrt(1.0 - abar)

    def d_alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise ValueError("DiscreteDDPM has no time derivative: use prediction_type 'eps', 'x0' or 'v' with it.")

    def sample_t(self, rng: jax.Array, shape: tuple[int, ...], lo: float, hi: float) -> jax.Array:
        """Integer t ~ U{int(lo*T), ..., int(hi*T)} (both ends included, as DMD2's torch.randint(min, max+1))."""
        t_lo, t_hi = int(lo * self.num_timesteps), int(hi * self.num_timesteps)
        t_hi = min(t_hi, self.num_timesteps - 1)
        return jax.random.randint(rng, shape, t_lo, t_hi + 1, dtype=jnp.int32)

    def timestep(self, fraction: float) -> jax.Array:
        """The timestep at a fraction of the axis: 1.0 -> T-1 (pure-noise end)."""
        return jnp.asarray(min(int(round(fraction * self.num_timesteps)), self.num_timesteps - 1), jnp.int32)


@dataclasses.dataclass(frozen=True)
class VPContinuous:
    """Continuous variance-preserving schedule (Song et al. 2021, linear beta(t) = b0 + t (b1 - b0)).

    log alpha(t) = -t^2 (b1 - b0) / 4 - t b0 / 2,  sigma(t) = sqrt(1 - alpha(t)^2),  t in [0, 1].
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    discrete: bool = dataclasses.field(default=False, init=False)

    def _log_alpha(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha_sigma(self, t):
        t = jnp.asarray(t, jnp.float32)
        alpha = jnp.exp(self._log_alpha(t))
        return alpha, jnp.sqrt(-jnp.expm1(2.0 * self._log_alpha(t)))

    def d_alpha_sigma(self, t):
        t = jnp.asarray(t, jnp.float32)
        alpha, sigma = self.alpha_sigma(t)
        d_log_alpha = -0.5 * t * (self.beta_max - self.beta_min) - 0.5 * self.beta_min
        d_alpha = alpha * d_log_alpha
        return d_alpha, -alpha * d_alpha / sigma

    def sample_t(self, rng, shape, lo, hi):
        return jax.random.uniform(rng, shape, jnp.float32, lo, hi)

    def timestep(self, fraction):
        return jnp.asarray(fraction, jnp.float32)


@dataclasses.dataclass(frozen=True)
class RectifiedFlow:
    """Rectified flow / linear interpolant (Wan, SD3; SiT with time reversed).

    alpha(t) = 1 - t, sigma(t) = t, t in [0, 1] (t = 0 data, t = 1 noise); velocity u = eps - x0.
    """

    discrete: bool = dataclasses.field(default=False, init=False)

    def alpha_sigma(self, t):
        t = jnp.asarray(t, jnp.float32)
        return 1.0 - t, t

    def d_alpha_sigma(self, t):
        t = jnp.asarray(t, jnp.float32)
        return -jnp.ones_like(t), jnp.ones_like(t)

    def sample_t(self, rng, shape, lo, hi):
        return jax.random.uniform(rng, shape, jnp.float32, lo, hi)

    def timestep(self, fraction):
        return jnp.asarray(fraction, jnp.float32)


def shift_sigma(s, shift: float):
    """The flow-matching timestep shift (SD3 / Wan; diffusers' FlowMatchEulerDiscreteScheduler with
    use_dynamic_shifting=False, UniPCMultistepScheduler's flow_shift): sigma = shift s / (1 + (shift - 1) s),
    a monotone map of [0, 1] onto itself (shift > 1 spends more of the axis at high noise)."""
    s = jnp.asarray(s, jnp.float32)
    return shift * s / (1.0 + (shift - 1.0) * s)


@dataclasses.dataclass(frozen=True)
class ShiftedRectifiedFlow(RectifiedFlow):
    """RectifiedFlow (t = sigma: x_t = (1 - t) x0 + t eps, u = eps - x0) whose time axis is walked through the
    timestep shift: `sample_t` draws s ~ U[lo, hi] and returns t = shift_sigma(s), `timestep(fraction)` is
    shift_sigma(fraction). So DMD2's step-percent ranges and a student's fixed timesteps are fractions of the
    shifted axis, as diffusers' scheduler spaces its sigmas, while the x0 / target algebra is RectifiedFlow's.

    shift: diffusers' Wan pipeline documents 3.0 for 480P and 5.0 for 720P (pipelines/wan/pipeline_wan.py).
    """

    shift: float = 3.0

    def sample_t(self, rng, shape, lo, hi):
        return shift_sigma(jax.random.uniform(rng, shape, jnp.float32, lo, hi), self.shift)

    def timestep(self, fraction):
        return shift_sigma(fraction, self.shift)


Schedule = DiscreteDDPM | VPContinuous | RectifiedFlow

SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "ddpm": DiscreteDDPM,
    "vp": VPContinuous,
    "rectified_flow": RectifiedFlow,
    "shifted_rectified_flow": ShiftedRectifiedFlow,
}


def make_schedule(name: str, **kwargs) -> Schedule:
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}: choose one of {sorted(SCHEDULES)}.")
    return SCHEDULES[name](**kwargs)


def add_noise(schedule: Schedule, x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = alpha(t) x0 + sigma(t) eps, computed in float32."""
    alpha, sigma = schedule.alpha_sigma(t)
    x0, eps = x0.astype(jnp.float32), eps.astype(jnp.float32)
    return _per_sample(alpha, x0) * x0 + _per_sample(sigma, x0) * eps


def to_x0(schedule: Schedule, prediction_type: str, pred: jax.Array, x_t: jax.Array, t: jax.Array) -> jax.Array:
    """Recover the x0-prediction from a network's native output (float32).

    eps:      x0 = (x_t - sigma eps) / alpha
    x0:       x0
    v:        x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)
    velocity: x0 = (sigma' x_t - sigma u) / (alpha sigma' - sigma alpha')
    """
    pred, x_t = pred.astype(jnp.float32), x_t.astype(jnp.float32)
    alpha, sigma = (_per_sample(c, x_t) for c in schedule.alpha_sigma(t))
    if prediction_type == "eps":
        return (x_t - sigma * pred) / alpha
    if prediction_type == "x0":
        return pred
    if prediction_type == "v":
        return (alpha * x_t - sigma * pred) / (alpha**2 + sigma**2)
    if prediction_type == "velocity":
        d_alpha, d_sigma = (_per_sample(c, x_t) for c in schedule.d_alpha_sigma(t))
        return (d_sigma * x_t - sigma * pred) / (alpha * d_sigma - sigma * d_alpha)
    raise ValueError(f"Unknown prediction_type {prediction_type!r}: choose one of {PREDICTION_TYPES}.")


def target(schedule: Schedule, prediction_type: str, x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """The regression target of a network's native parameterisation for the pair (x0, eps) at time t."""
    x0, eps = x0.astype(jnp.float32), eps.astype(jnp.float32)
    if prediction_type == "eps":
        return eps
    if prediction_type == "x0":
        return x0
    alpha, sigma = (_per_sample(c, x0) for c in schedule.alpha_sigma(t))
    if prediction_type == "v":
        return alpha * eps - sigma * x0
    if prediction_type == "velocity":
        d_alpha, d_sigma = (_per_sample(c, x0) for c in schedule.d_alpha_sigma(t))
        return d_alpha * x0 + d_sigma * eps
    raise ValueError(f"Unknown prediction_type {prediction_type!r}: choose one of {PREDICTION_TYPES}.")
