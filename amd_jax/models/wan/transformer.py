"""The Wan2.1 text-to-video transformer in Flax linen: diffusers 0.39's `WanTransformer3DModel`, channels-last.

    latents [B, F, H, W, C] --Conv3d (kernel = stride = patch)--> tokens [B, N, D], N = f*h*w in (f, h, w) order
    t [B] (diffusers' 0..1000) -> sinusoid (freq_dim, cos then sin) -> time_embedder MLP (SiLU) = temb [B, D]
                              -> time_proj(SiLU(temb)) = the 6 per-block modulations [B, 6, D]
    text [B, L, text_dim] -> text_embedder (Linear, tanh-GELU, Linear) = context [B, L, D]
    num_layers x block (nn.scan over stacked params, optional remat):
        x += gate * attn1(LN(x) * (1 + scale) + shift)      self-attention, 3-D rotary q/k, RMS-normed q/k
        x += attn2(LN_affine(x), context)                    cross-attention (LN only with cross_attn_norm)
        x += c_gate * ffn(LN(x) * (1 + c_scale) + c_shift)   tanh-GELU MLP
      with (shift, scale, gate, c_shift, c_scale, c_gate) = the block's scale_shift_table [1, 6, D] + modulations
    LN(x) * (1 + scale) + shift (scale_shift_table [1, 2, D] + temb) -> proj_out -> unpatchify [B, F, H, W, C_out]

The rotary embedding is `WanRotaryPosEmbed`: head_dim d is split into frames / height / width channels
(d - 4*(d//6), 2*(d//6), 2*(d//6)), each a 1-D RoPE with theta 1e4 over its axis' patch index, the channels
rotated in adjacent pairs (2k, 2k+1). The q/k RMSNorm runs over all heads together (`rms_norm_across_heads`, the
only kind diffusers 0.39 builds). Image-to-video is not implemented: no image embedder and no added k/v
projections (`image_dim` / `added_kv_proj_dim` are refused by `WanConfig.from_diffusers`), and no Wan2.2
per-token timesteps (timestep [B, N]).

Precision (house style, as the SDXL UNet and SiT): parameters in `param_dtype` (float32), the token matmuls and
attention in `dtype` (bfloat16 by default, from models/common/dtypes.py); the residual stream, every LayerNorm /
RMSNorm, the rotary rotation, the attention softmax (models/common/attention.py), the time embedding and
modulations stay in float32 (diffusers keeps time_embedder, the scale_shift_tables and the norms in float32 too).
Outputs are float32.

`features=True` also returns the last block's output tokens [B, N, D] float32, for DMD2's GAN head.

Sequence parallelism (`sequence`, a parallel/context.py SequenceParallel; None: off): the tokens [B, N, D] are
constrained to the activation rules' (batch, tokens) split at the patch embedding and at every block, self-attention
runs over the split sequence by all-to-all ('ulysses') or ring attention, cross-attention on the local queries; the
sizes are checked (one ConfigError line) when the call is traced, before anything compiles.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from amd_jax.errors import ConfigError
from amd_jax.models.common.attention import AttentionCore
from amd_jax.models.common.dtypes import DTYPES, dtype as dtype_of
from amd_jax.models.common.embeddings import timestep_embedding
from amd_jax.models.common.remat import POLICIES, remat

CLASS_NAME = "WanTransformer3DModel"  # diffusers' class; config.json's _class_name
REMAT_POLICIES = POLICIES  # the remat knob's values (models/common/remat.py)
QK_NORMS = ("rms_norm_across_heads",)
ROPE_THETA = 10000.0
# config.json fields of the architecture, with diffusers' defaults (WanTransformer3DModel.__init__).
ARCH_DEFAULTS: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, rope_max_seq_len=1024)
# Image-to-video / Wan2.2 fields: only their "absent" value is implemented.
UNSUPPORTED = {"image_dim": None, "added_kv_proj_dim": None, "pos_embed_seq_len": None}


@dataclasses.dataclass(frozen=True)
class WanConfig:
    """A Wan transformer: the architecture fields of diffusers' config.json (`ARCH_DEFAULTS`) plus run-time knobs.

    dtype / param_dtype: names from models/common/dtypes.py (compute and storage). remat: 'none', 'block' (each
    block recomputed in the backward pass) or 'dots' (recomputed except its matmul outputs without batch dims).
    """

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 40
    attention_head_dim: int = 128
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 13824
    num_layers: int = 40
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"
    eps: float = 1e-6
    rope_max_seq_len: int = 1024
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        problems = []
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            problems.append(f"patch_size={self.patch_size} must be 3 positive ints (frames, height, width)")
        if self.attention_head_dim % 2 or self.attention_head_dim < 6:
            problems.append(f"attention_head_dim={self.attention_head_dim} must be even and >= 6 (3-D rotary split)")
        if self.qk_norm not in QK_NORMS:
            problems.append(f"qk_norm={self.qk_norm!r}: diffusers 0.39 builds only {QK_NORMS}")
        if self.dtype not in DTYPES or self.param_dtype not in DTYPES:
            problems.append(f"dtype={self.dtype!r} / param_dtype={self.param_dtype!r}: use one of {tuple(DTYPES)}")
        if self.remat not in REMAT_POLICIES:
            problems.append(f"remat={self.remat!r}: use one of {REMAT_POLICIES}")
        if problems:
            raise ConfigError("WanConfig: " + "; ".join(problems) + ".")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Rotary channels of (frames, height, width) per head, as WanRotaryPosEmbed."""
        hw = 2 * (self.attention_head_dim // 6)
        return self.attention_head_dim - 2 * hw, hw, hw

    def arch(self) -> dict[str, Any]:
        """The architecture fields (what config.json stores)."""
        return {k: getattr(self, k) for k in ARCH_DEFAULTS}

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], what: str = "config.json", **run) -> "WanConfig":
        """The config of a diffusers `WanTransformer3DModel` config.json dict (`run`: dtype, remat, ...); one
        ConfigError line for another class or an image-to-video option."""
        name = config.get("_class_name")
        if name not in (None, CLASS_NAME):
            raise ConfigError(f"{what} is a {name}, not a {CLASS_NAME}: point it at the transformer/ folder of a "
                              "Wan2.1 diffusers checkpoint (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers/transformer).")
        bad = {k: config[k] for k, v in UNSUPPORTED.items() if config.get(k, v) != v}
        if bad:
            raise ConfigError(f"{what}: {bad} are image-to-video / Wan2.2 options this Flax transformer does not "
                              "implement: use a text-to-video Wan2.1 checkpoint.")
        return cls(**{k: config.get(k, v) for k, v in ARCH_DEFAULTS.items()}, **run)


WAN21_T2V_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                      out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30)


# ------------------------------------------------------------------------------------------------ rotary
def rope_1d(dim: int, length: int, theta: float = ROPE_THETA) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) [length, dim/2] float64 of positions 0..length-1 at frequencies theta^(-2k/dim), k < dim/2."""
    freqs = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = np.outer(np.arange(length, dtype=np.float64), freqs)
    return np.cos(angles), np.sin(angles)


def rope_3d(cfg: WanConfig, grid: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) [f*h*w, head_dim/2] float32: per token (raster order f, h, w), the frames' rotary pairs, then
    the height's, then the width's (WanRotaryPosEmbed's concatenation, one entry per channel pair)."""
    if max(grid) > cfg.rope_max_seq_len:
        raise ConfigError(f"a latent grid of {grid} patches exceeds rope_max_seq_len={cfg.rope_max_seq_len}: "
                          "use fewer frames / a smaller resolution.")
    parts = []
    for axis, (dim, n) in enumerate(zip(cfg.rope_split, grid)):
        table = np.stack(rope_1d(dim, n))  # [2, n, dim/2]
        shape = [2, 1, 1, 1, dim // 2]
        shape[1 + axis] = n
        parts.append(np.broadcast_to(table.reshape(shape), (2, *grid, dim // 2)))
    cos_sin = np.concatenate(parts, axis=-1).reshape(2, math.prod(grid), -1).astype(np.float32)
    return cos_sin[0], cos_sin[1]


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, N, heads, d] rotated pairwise: (x_2k, x_2k+1) by angle k of each token; float32 math, x's dtype out."""
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[None, :, None], sin[None, :, None]
    out = jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)


# ------------------------------------------------------------------------------------------------ layers
def _dense(cfg: WanConfig, features: int, name: str, dtype=None) -> nn.Dense:
    return nn.Dense(features, dtype=dtype or dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype), name=name)


def _layer_norm(cfg: WanConfig, name: str, affine: bool = False) -> nn.LayerNorm:
    """FP32LayerNorm: statistics (two-pass variance) and result in float32."""
    return nn.LayerNorm(epsilon=cfg.eps, use_scale=affine, use_bias=affine, use_fast_variance=False,
                        dtype=jnp.float32, param_dtype=dtype_of(cfg.param_dtype), name=name)


class Attention(nn.Module):
    """WanAttention: to_q/k/v (bias), RMSNorm over all heads on q and k, optional rotary, core, to_out.0."""

    cfg: WanConfig
    core: AttentionCore

    @nn.compact
    def __call__(self, x, context=None, rope=None):
        cfg, compute = self.cfg, dtype_of(self.cfg.dtype)
        context = x if context is None else context
        heads, d = cfg.num_attention_heads, cfg.inner_dim

        def project(name, src):
            return _dense(cfg, d, name)(src)

        def rms(name, y):
            norm = nn.RMSNorm(epsilon=cfg.eps, dtype=jnp.float32, param_dtype=dtype_of(cfg.param_dtype), name=name)
            return norm(y.astype(jnp.float32)).astype(compute)

        def split(y):
            return y.reshape(*y.shape[:2], heads, cfg.attention_head_dim)

        q = split(rms("norm_q", project("to_q", x)))
        k = split(rms("norm_k", project("to_k", context)))
        v = split(project("to_v", context))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = self.core(q, k, v).reshape(*x.shape[:2], d)
        return _dense(cfg, d, "to_out_0")(out)


class FeedForward(nn.Module):
    """net.0.proj -> tanh-GELU -> net.2."""

    cfg: WanConfig

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(_dense(self.cfg, self.cfg.ffn_dim, "net_0_proj")(x), approximate=True)
        return _dense(self.cfg, self.cfg.inner_dim, "net_2")(h)


def _table_init(rng, shape, dtype):
    """A modulation table [1, n, D] ~ N(0, 1/D), as diffusers draws its scale_shift_table."""
    return (jax.random.normal(rng, shape) / shape[-1] ** 0.5).astype(dtype)


def _modulate(norm: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return norm * (1 + scale) + shift


class Block(nn.Module):
    """WanTransformerBlock. Returns (x, None), the carry signature of nn.scan; x stays float32. With `sequence`
    (parallel/context.py) its tokens stay split over the context axis and its attentions run across it."""

    cfg: WanConfig
    core: AttentionCore
    sequence: Any = None

    @nn.compact
    def __call__(self, x, context, modulation, rope):
        cfg, compute = self.cfg, dtype_of(self.cfg.dtype)
        table = self.param("scale_shift_table", _table_init, (1, 6, cfg.inner_dim), dtype_of(cfg.param_dtype))
        shift, scale, gate, c_shift, c_scale, c_gate = jnp.split(table.astype(jnp.float32) + modulation, 6, axis=1)
        self_core, cross_core, x = self.core, self.core, _split_tokens(self.sequence, x)
        if self.sequence is not None:
            self_core, cross_core = self.sequence.self_attention(self.core), self.sequence.cross_attention(self.core)
        h = _modulate(_layer_norm(cfg, "norm1")(x), shift, scale).astype(compute)
        x = x + Attention(cfg, self_core, name="attn1")(h, rope=rope).astype(jnp.float32) * gate
        h = _layer_norm(cfg, "norm2", affine=True)(x) if cfg.cross_attn_norm else x
        x = x + Attention(cfg, cross_core, name="attn2")(h.astype(compute), context).astype(jnp.float32)
        h = _modulate(_layer_norm(cfg, "norm3")(x), c_shift, c_scale).astype(compute)
        return x + FeedForward(cfg, name="ffn")(h).astype(jnp.float32) * c_gate, None


def _split_tokens(sequence, x: jax.Array) -> jax.Array:
    """Tokens [B, N, D] constrained to (batch, tokens) of the activation rules; unchanged without `sequence`."""
    return x if sequence is None else sequence.constrain(x, "batch", "tokens", None)


class ConditionEmbedder(nn.Module):
    """WanTimeTextImageEmbedding without the image part: (temb [B, D], modulations [B, 6, D], context [B, L, D])."""

    cfg: WanConfig

    @nn.compact
    def __call__(self, timestep, text):
        cfg, d = self.cfg, self.cfg.inner_dim
        freqs = timestep_embedding(timestep, cfg.freq_dim, flip_sin_to_cos=True, freq_shift=0.0)
        h = nn.silu(_dense(cfg, d, "time_embedder_linear_1", jnp.float32)(freqs))
        temb = _dense(cfg, d, "time_embedder_linear_2", jnp.float32)(h)
        modulations = _dense(cfg, 6 * d, "time_proj", jnp.float32)(nn.silu(temb)).reshape(-1, 6, d)
        h = nn.gelu(_dense(cfg, d, "text_embedder_linear_1")(text.astype(dtype_of(cfg.dtype))), approximate=True)
        return temb, modulations, _dense(cfg, d, "text_embedder_linear_2")(h)


class WanTransformer(nn.Module):
    """(latents [B, F, H, W, C], timestep [B] or scalar in diffusers' 0..1000, text [B, L, text_dim]) -> the
    prediction [B, F, H, W, out_channels] float32 (Wan2.1's flow velocity), and with features=True also the last
    block's tokens [B, N, D] float32. `core` picks the attention kernel (models/common/attention.py); `sequence`
    (parallel/context.py's SequenceParallel) splits the tokens over the mesh's context axis."""

    cfg: WanConfig
    core: AttentionCore = AttentionCore()
    sequence: Any = None

    @nn.compact
    def __call__(self, latents, timestep, text, features: bool = False):
        cfg, compute = self.cfg, dtype_of(self.cfg.dtype)
        b = latents.shape[0]
        grid = check_latents(cfg, latents.shape)
        if self.sequence is not None:
            self.sequence.check(b, math.prod(grid), cfg.num_attention_heads)
        x = nn.Conv(cfg.inner_dim, cfg.patch_size, strides=cfg.patch_size, padding="VALID", dtype=compute,
                    param_dtype=dtype_of(cfg.param_dtype), name="patch_embedding")(latents.astype(compute))
        x = _split_tokens(self.sequence, x.reshape(b, -1, cfg.inner_dim).astype(jnp.float32))
        timestep = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32), (b,))
        temb, modulations, context = ConditionEmbedder(cfg, name="condition_embedder")(timestep, text)
        rope = tuple(jnp.asarray(a) for a in rope_3d(cfg, grid))
        stack = nn.scan(remat(Block, cfg.remat, in_scan=True), variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers)
        x, _ = stack(cfg, self.core, self.sequence, name="blocks")(x, context, modulations, rope)
        table = self.param("scale_shift_table", _table_init, (1, 2, cfg.inner_dim), dtype_of(cfg.param_dtype))
        shift, scale = jnp.split(table.astype(jnp.float32) + temb[:, None], 2, axis=1)
        h = _modulate(_layer_norm(cfg, "norm_out")(x), shift, scale).astype(compute)
        out = _dense(cfg, cfg.out_channels * math.prod(cfg.patch_size), "proj_out")(h).astype(jnp.float32)
        out = unpatchify(out, grid, cfg.patch_size, cfg.out_channels)
        return (out, x) if features else out


def check_latents(cfg: WanConfig, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The patch grid (f, h, w) of channels-last latents `shape`; one ConfigError line if they do not fit."""
    if len(shape) != 5 or shape[-1] != cfg.in_channels:
        raise ConfigError(f"Wan latents must be [B, F, H, W, {cfg.in_channels}] (channels last), got {tuple(shape)}.")
    spatial = shape[1:4]
    if any(n % p for n, p in zip(spatial, cfg.patch_size)):
        raise ConfigError(f"Wan latents (F, H, W)={tuple(spatial)} are not multiples of patch_size="
                          f"{cfg.patch_size}: choose frames/resolution that are.")
    return tuple(n // p for n, p in zip(spatial, cfg.patch_size))


def unpatchify(tokens: jax.Array, grid: tuple[int, int, int], patch: tuple[int, int, int], channels: int):
    """[B, f*h*w, pt*ph*pw*C] (each token laid out (pt, ph, pw, C), as diffusers) -> [B, f*pt, h*ph, w*pw, C]."""
    (f, h, w), (pt, ph, pw) = grid, patch
    x = tokens.reshape(tokens.shape[0], f, h, w, pt, ph, pw, channels)
    return x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(tokens.shape[0], f * pt, h * ph, w * pw, channels)


# -------------------------------------------------------------------------------------- params and counts
def _dummy_inputs(cfg: WanConfig):
    return (jnp.zeros((1, *cfg.patch_size, cfg.in_channels), jnp.float32), jnp.zeros((1,), jnp.float32),
            jnp.zeros((1, 1, cfg.text_dim), jnp.float32))


def init_params(cfg: WanConfig, rng: jax.Array) -> dict:
    """Fresh parameters (flax's default initialisers; the modulation tables N(0, 1/D) as diffusers)."""
    return WanTransformer(cfg).init(rng, *_dummy_inputs(cfg))["params"]


def abstract_params(cfg: WanConfig) -> dict:
    """The parameter tree as ShapeDtypeStructs (jax.eval_shape: nothing is allocated)."""
    return jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))


def param_count(cfg: WanConfig | None = None) -> int:
    """Number of parameters of `cfg` (default: Wan2.1-T2V-1.3B) by eval_shape."""
    cfg = cfg or WanConfig(**WAN21_T2V_1_3B)
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(abstract_params(cfg)))
