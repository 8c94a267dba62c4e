"""Few-step student sampling and DMD2's backward simulation for multi-step students."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from amd_jax.method.schedules import Schedule, add_noise

X0Fn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_t, t[B]) -> x0 prediction


def _step_t(timesteps: jax.Array, j, batch: int) -> jax.Array:
    return jnp.broadcast_to(timesteps[j], (batch,))


def backward_simulation(x0_fn: X0Fn, schedule: Schedule, timesteps: jax.Array, z: jax.Array, k, rng: jax.Array):
    """The input of student step k, reached from noise without gradient (DMD2's backward simulation).

    x_{t_0} = z;  for j < k:  x0_j = G(x_{t_j}, t_j),  x_{t_{j+1}} = alpha_{t_{j+1}} x0_j + sigma_{t_{j+1}} eps_j.
    `k` may be traced (one index shared by the batch). Returns sg(x_{t_k}); k = 0 returns z.
    """
    batch = z.shape[0]

    def body(j, x):
        x0 = x0_fn(x, _step_t(timesteps, j, batch))
        eps = jax.random.normal(jax.random.fold_in(rng, j), x.shape, jnp.float32)
        return add_noise(schedule, x0, eps, _step_t(timesteps, j + 1, batch))

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, k, body, z.astype(jnp.float32)))


def sample(x0_fn: X0Fn, schedule: Schedule, timesteps: jax.Array, z: jax.Array, rng: jax.Array) -> jax.Array:
    """Run all len(timesteps) student steps from noise z and return the final clean sample."""
    n = timesteps.shape[0]
    x = backward_simulation(x0_fn, schedule, timesteps, z, n - 1, rng)
    return x0_fn(x, _step_t(timesteps, n - 1, z.shape[0]))


def ddim_sample(x0_fn: X0Fn, schedule: Schedule, timesteps: jax.Array, z: jax.Array) -> jax.Array:
    """Deterministic DDIM (eta = 0) from noise z over decreasing `timesteps`; the teacher's many-step sampler.

    x0 = f(x_t, t), eps = (x_t - alpha_t x0) / sigma_t, x_{t'} = alpha_{t'} x0 + sigma_{t'} eps; returns the last x0.
    """
    batch = z.shape[0]

    def body(j, x):
        t = _step_t(timesteps, j, batch)
        x0 = x0_fn(x, t)
        alpha, sigma = schedule.alpha_sigma(t)
        eps = (x - alpha.reshape((-1,) + (1,) * (x.ndim - 1)) * x0) / sigma.reshape((-1,) + (1,) * (x.ndim - 1))
        return add_noise(schedule, x0, eps, _step_t(timesteps, j + 1, batch))

    n = timesteps.shape[0]
    x = jax.lax.fori_loop(0, n - 1, body, z.astype(jnp.float32))
    return x0_fn(x, _step_t(timesteps, n - 1, batch))
