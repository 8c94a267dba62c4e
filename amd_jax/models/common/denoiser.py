"""One small interface for every network the method touches: x0-prediction from any parameterisation.

A `Denoiser` pairs a pure apply function with its noise schedule and native parameterisation. Student,
critic and teacher are all Denoisers (the student is used at its few fixed timesteps). Models of any size
(toy MLP, SDXL UNet, DiT) only have to provide

    apply_fn(params, x_t, t, cond, features=False) -> native prediction  (or (prediction, features))
    null_cond(cond) -> the unconditional branch's condition (toy: the null label; SDXL: zero embeddings)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from amd_jax.method.schedules import Schedule, to_x0


@dataclasses.dataclass(frozen=True)
class Denoiser:
    apply_fn: Callable[..., Any]
    null_cond: Callable[[Any], Any]
    schedule: Schedule
    prediction_type: str

    def native(self, params, x_t, t, cond):
        return self.apply_fn(params, x_t, t, cond)

    def x0(self, params, x_t, t, cond) -> jax.Array:
        """float32 x0-prediction, whatever the network's native output and dtype."""
        return to_x0(self.schedule, self.prediction_type, self.apply_fn(params, x_t, t, cond), x_t, t)

    def x0_cond_uncond(self, params, x_t, t, cond) -> tuple[jax.Array, jax.Array]:
        """x0 with and without the condition from ONE call on a doubled batch (as DMD2 does): one pass over the
        weights (one FSDP all-gather) and larger matmuls. The rows interleave (row i, then row i unconditional),
        so a batch-sharded x_t stays on its devices when doubled."""
        def interleave(a, b):
            return jnp.stack([a, b], axis=1).reshape((-1,) + a.shape[1:])

        t = jnp.broadcast_to(t, x_t.shape[:1])
        null = self.null_cond(cond)  # its keys are what the network reads (a batch may hold more, e.g. reward tokens)
        both = {k: jax.tree_util.tree_map(interleave, cond[k], null[k]) for k in null}
        x0 = self.x0(params, interleave(x_t, x_t), interleave(t, t), both)
        x0 = x0.reshape((-1, 2) + x0.shape[1:])
        return x0[:, 0], x0[:, 1]

    def x0_and_features(self, params, x_t, t, cond):
        """x0-prediction plus the network's feature map (for DMD2's GAN head)."""
        pred, feats = self.apply_fn(params, x_t, t, cond, features=True)
        return to_x0(self.schedule, self.prediction_type, pred, x_t, t), feats
