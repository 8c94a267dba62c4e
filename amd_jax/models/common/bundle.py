"""A task's networks: its three denoisers, the optional GAN head and the reward function (no weights, no data)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from amd_jax.models.common.denoiser import Denoiser


@dataclasses.dataclass(frozen=True)
class Models:
    student: Denoiser  # the few-step generator, initialised from the teacher (DMD2)
    critic: Denoiser  # the fake teacher, initialised from the teacher
    teacher: Denoiser  # frozen real teacher
    init_denoiser: Callable[[jax.Array], Any]  # rng -> params of the teacher architecture
    gan_head: Callable[[Any, jax.Array], jax.Array] | None  # (params, critic features) -> logits [B]
    init_gan_head: Callable[[jax.Array], Any] | None
    reward: Callable[[Any, jax.Array, Any], jax.Array] | None  # (params, x, cond) -> [B]; frozen
    sample_shape: tuple[int, ...]  # shape of one student sample x
    # (x, cond) -> [B] bool: the ground-truth Forbidden Zone where a task knows it by construction (zones2d); the
    # generator step then logs the real and fake teachers' gaps on those samples (Steps._zone_probe). None elsewhere.
    gt_zone: Callable[[jax.Array, Any], jax.Array] | None = None
