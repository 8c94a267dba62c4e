"""The Wan task's networks (no weights): student, critic and frozen teacher are the Wan transformer as a project
Denoiser (models/wan/denoiser.py: rectified flow with Wan's timestep shift, velocity, CFG against the negative
prompt's embeddings), built with SequenceParallel over the mesh's context axis when it has one of size > 1; the GAN
head (DMD2's MLP, models/common/gan_head.py) on the critic's last-block tokens mean-pooled, as SiT's; the reward
(models/rewards/video.py) on VAE-decoded videos."""

from __future__ import annotations

import jax.numpy as jnp

from amd_jax.models.common.attention import AttentionCore
from amd_jax.models.common.bundle import Models
from amd_jax.models.common.gan_head import GANHead
from amd_jax.models.rewards.video import video_reward
from amd_jax.models.wan import denoiser as wan_denoiser
from amd_jax.models.wan import vae as wan_vae
from amd_jax.models.wan.transformer import init_params
from amd_jax.parallel import mesh as mesh_lib
from amd_jax.parallel.context import SequenceParallel
from amd_jax.parallel.sharding import activation_rules
from amd_jax.tasks.wan.checks import CONTEXT_AXIS, latent_shape


def batch_axes(config, mesh) -> tuple[str, ...]:
    """The session mesh's axes the batch is split over (config mesh.batch_axes); () without a mesh."""
    return mesh_lib.batch_axes(mesh, config.mesh.batch_axes) if mesh is not None else ()


def sequence_parallel(config, mesh) -> SequenceParallel | None:
    """SequenceParallel over the mesh's context axis, or None where it has none or of size 1."""
    if mesh is None or mesh.shape.get(CONTEXT_AXIS, 1) <= 1:
        return None
    return SequenceParallel(mesh, config.model.sequence_method, activation_rules(batch_axes(config, mesh)))


def build_models(config, assets, mesh=None) -> Models:
    cfg = assets.transformer_config()
    seq = sequence_parallel(config, mesh)
    core = AttentionCore(config.model.attention, None if seq else mesh, batch_axes(config, mesh))
    shift = float(config.schedule.kwargs.get("shift", 3.0))
    den = wan_denoiser.make_denoiser(cfg, assets.negative(), shift, core, seq)

    gan_head = init_gan_head = None
    if config.gan.enabled:
        head = GANHead(int(config.gan.hidden))
        gan_head = lambda params, feats: head.apply({"params": params}, wan_denoiser.pool_features(feats))
        init_gan_head = lambda rng: head.init(rng, jnp.zeros((1, cfg.inner_dim), jnp.float32))["params"]

    reward = None
    if config.reward.name:
        frames, weight = int(config.reward.frames), float(config.reward.temporal_weight)
        prefix = int(config.reward.latent_frames) or None  # None: every latent frame

        def reward(params, latents, cond):
            # the first `prefix` latent frames decode to exactly the first 4 prefix - 3 frames of the whole video
            # (causal convolutions): a shorter decode, the same pixels
            video = wan_vae.decode(assets.vae_module(), params["vae"], latents[:, :prefix])  # [B, T, H, W, 3]
            return video_reward(assets.scorer().score, params["scorer"], video, cond["reward_tokens"], frames, weight)

    return Models(student=den, critic=den, teacher=den, init_denoiser=lambda rng: init_params(cfg, rng),
                  gan_head=gan_head, init_gan_head=init_gan_head, reward=reward,
                  sample_shape=latent_shape(config, cfg.in_channels))
