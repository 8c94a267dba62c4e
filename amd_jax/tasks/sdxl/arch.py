"""The published architecture of stabilityai/stable-diffusion-xl-base-1.0 (unet/ and vae/ config.json, verbatim
keys), for planning configs/sdxl.py without its weights (amd_jax/plan: model.path empty); and the task's abstract
frozen parameters and batch, from the architecture alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from amd_jax.models.common.params import cast_params

SDXL_BASE_UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280], "center_input_sample": False, "class_embed_type": None,
    "class_embeddings_concat": False, "conv_in_kernel": 3, "conv_out_kernel": 3, "cross_attention_dim": 2048,
    "cross_attention_norm": None, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_only_cross_attention": None, "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05, "norm_num_groups": 32, "num_attention_heads": None, "num_class_embeds": None,
    "only_cross_attention": False, "out_channels": 4, "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": False, "resnet_time_scale_shift": "default",
    "sample_size": 128, "time_cond_proj_dim": None, "time_embedding_act_fn": None, "time_embedding_dim": None,
    "time_embedding_type": "positional", "timestep_post_act": None, "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": None,
    "use_linear_projection": True,
}

SDXL_BASE_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "force_upcast": True, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 1024, "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

PROMPT_TOKENS = 77  # both SDXL text encoders' sequence length


def text_dims(unet_config: dict) -> tuple[int, int]:
    """(prompt embedding width, pooled embedding width) the UNet expects: 2048 and 1280 for SDXL base."""
    pooled = unet_config["projection_class_embeddings_input_dim"] - 6 * unet_config["addition_time_embed_dim"]
    return int(unet_config["cross_attention_dim"]), int(pooled)


def abstract_frozen(init_denoiser, teacher_dtype, vae_module=None, scorer=None) -> dict:
    """{'teacher': the UNet's params in teacher_dtype, 'reward': {'vae', 'scorer'} float32 | None} as
    ShapeDtypeStructs: what the task's teacher() and reward() would load (assets.py), by shape."""
    teacher = jax.eval_shape(lambda: cast_params(init_denoiser(jax.random.PRNGKey(0)), teacher_dtype))
    if scorer is None:
        return {"teacher": teacher, "reward": None}
    vae = jax.eval_shape(vae_module.init_weights, jax.random.PRNGKey(0))
    f32 = lambda t: jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.float32), t)
    return {"teacher": teacher, "reward": {"vae": f32(vae), "scorer": f32(scorer.abstract_params())}}


def abstract_batch(unet_config: dict, sample_shape, text_dtype, reward_tokens: int | None, real: bool, bsz: int):
    """A global batch of `bsz` rows as ShapeDtypeStructs, as amd_jax/data/prompts.py's PromptSource makes it:
    {'cond': {prompt_embeds, text_embeds, time_ids, reward_tokens (with a reward)}, 'real': latents or [B, 1]}."""
    width, pooled = text_dims(unet_config)
    s = jax.ShapeDtypeStruct
    cond = {"prompt_embeds": s((bsz, PROMPT_TOKENS, width), text_dtype), "text_embeds": s((bsz, pooled), text_dtype),
            "time_ids": s((bsz, 6), jnp.float32)}
    if reward_tokens:
        cond["reward_tokens"] = s((bsz, reward_tokens), jnp.int32)
    return {"cond": cond, "real": s((bsz,) + (tuple(sample_shape) if real else (1,)), jnp.float32)}
