"""diffusers' FlaxUNet2DConditionModel as a project `Denoiser` (SDXL: eps-prediction on DiscreteDDPM).

Layout: latents are NCHW `[B, 4, H/8, W/8]`, as in diffusers and DMD2 (the Flax UNet transposes to NHWC
inside; XLA fuses it). The condition is a dict

    prompt_embeds [B, 77, 2048]  concatenated penultimate CLIP-L + bigG hidden states
    text_embeds   [B, 1280]      pooled, projected bigG embedding
    time_ids      [B, 6]         micro-conditioning (orig h, orig w, crop top, crop left, target h, target w)

`null_cond` zeroes prompt_embeds and text_embeds and keeps time_ids (DMD2's unconditional branch).
`features=True` also returns the mid-block output, NHWC `[B, H/64, W/64, 1280]` for SDXL (captured with flax's
`capture_intermediates`, no re-implemented forward), which DMD2's GAN head consumes.
Params may be stored in bf16 (a frozen teacher); outputs are always float32.

GELU: diffusers' FlaxGEGLU uses flax's default tanh-approximate `nn.gelu`, while the PyTorch UNet (the one SDXL
was trained with) uses the exact erf GELU. `exact_gelu=True` (default) swaps in the exact form through a flax
method interceptor (no global patching); it brings the tiny-UNet parity with PyTorch from 2.6e-4 to ~1e-5.
Our own UNet (unet_flax.SDXLUNet, `model.unet_impl='owned'`) computes the exact GELU itself (its `exact_gelu`
field); the interceptor matches only diffusers' FlaxGEGLU, so it is a no-op there.
"""

from __future__ import annotations

import functools
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from diffusers.models.attention_flax import FlaxGEGLU

from amd_jax.method.schedules import DiscreteDDPM, Schedule
from amd_jax.models.common.denoiser import Denoiser

COND_KEYS = ("prompt_embeds", "text_embeds", "time_ids")


def is_mid_block(module, method_name: str) -> bool:
    """capture_intermediates filter: the UNet mid-block's output (DMD2 GAN-head features)."""
    return method_name == "__call__" and module.name == "mid_block"


def _exact_gelu_geglu(next_fun, args, kwargs, context):
    """Flax interceptor: FlaxGEGLU.__call__ with the exact (erf) GELU, as PyTorch diffusers' GEGLU."""
    mod = context.module
    if not (isinstance(mod, FlaxGEGLU) and context.method_name == "__call__"):
        return next_fun(*args, **kwargs)
    hidden_states = args[0] if args else kwargs["hidden_states"]
    deterministic = args[1] if len(args) > 1 else kwargs.get("deterministic", True)
    linear, gate = jnp.split(mod.proj(hidden_states), 2, axis=2)
    return mod.dropout_layer(linear * nn.gelu(gate, approximate=False), deterministic=deterministic)


def unet_apply(module, params, x_t: jax.Array, t: jax.Array, cond: Mapping[str, jax.Array],
               features: bool = False, exact_gelu: bool = True):
    """Native UNet output (float32, NCHW like x_t) and, with features=True, the mid-block output (NHWC)."""
    if exact_gelu:
        with nn.intercept_methods(_exact_gelu_geglu):
            return unet_apply(module, params, x_t, t, cond, features, exact_gelu=False)
    missing = [k for k in COND_KEYS if k not in cond]
    if missing:
        raise KeyError(f"SDXL cond is missing {missing}; expected keys {COND_KEYS}.")
    if x_t.ndim != 4 or x_t.shape[1] != module.in_channels:
        raise ValueError(f"x_t must be NCHW [B, {module.in_channels}, h, w], got shape {x_t.shape}.")
    batch = x_t.shape[0]
    t = jnp.broadcast_to(jnp.asarray(t), (batch,))
    added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
    args = ({"params": params}, x_t.astype(module.dtype), t, cond["prompt_embeds"], added)
    if not features:
        (out,) = module.apply(*args, return_dict=False)
        return out.astype(jnp.float32)
    (out,), state = module.apply(*args, return_dict=False, capture_intermediates=is_mid_block,
                                 mutable=["intermediates"])
    mid = state["intermediates"]["mid_block"]["__call__"][0]
    return out.astype(jnp.float32), mid.astype(jnp.float32)


def null_cond(cond: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Unconditional branch: zero text and pooled embeddings, same micro-conditioning (DMD2)."""
    return {"prompt_embeds": jnp.zeros_like(cond["prompt_embeds"]),
            "text_embeds": jnp.zeros_like(cond["text_embeds"]),
            "time_ids": cond["time_ids"]}


def make_denoiser(module, schedule: Schedule | None = None, prediction_type: str = "eps",
                  exact_gelu: bool = True) -> Denoiser:
    """A Denoiser over `module` (params are passed at call time). SDXL base: eps on DiscreteDDPM()."""
    return Denoiser(apply_fn=functools.partial(unet_apply, module, exact_gelu=exact_gelu), null_cond=null_cond,
                    schedule=schedule or DiscreteDDPM(), prediction_type=prediction_type)

