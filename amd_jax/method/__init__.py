"""Pure math of DMD2 and AMD: no models, no I/O. See docs/METHOD.md for which rule is whose."""

from amd_jax.method.amd import dsa_deltas, group_advantage, rls_weights, zone_mask
from amd_jax.method.dmd import cfg, decompose, decoupled_gradient, dmd_gradient, dmd_loss, dmd_normalizer
from amd_jax.method.losses import denoising_loss, gan_critic_loss, gan_generator_loss
from amd_jax.method.schedules import (
    PREDICTION_TYPES,
    DiscreteDDPM,
    RectifiedFlow,
    Schedule,
    VPContinuous,
    add_noise,
    make_schedule,
    target,
    to_x0,
)
from amd_jax.method.simulation import backward_simulation, ddim_sample, sample
