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

    def x0_and_features(self, params, x_t, t, cond):
        """x0-prediction plus the network's feature map (for DMD2's GAN head)."""
        pred, feats = self.apply_fn(params, x_t, t, cond, features=True)
        return to_x0(self.schedule, self.prediction_type, pred, x_t, t), feats
