"""The Wan2.1 video VAE in Flax linen: diffusers 0.39's `AutoencoderKLWan`, channels-last [B, F, H, W, C].

    video [B, 1 + 4k, H, W, 3] in [-1, 1]  --encoder-->  posterior mean / logvar [B, 1 + k, H/8, W/8, z_dim]
    latents [B, f, h, w, z_dim]            --decoder-->  video [B, 1 + 4(f - 1), 8h, 8w, 3], clamped to [-1, 1]

(4x temporal, 8x spatial and z_dim 16 in Wan2.1's config; the factors follow dim_mult / temperal_downsample.)
The layers: causal 3-D convolutions (3x3x3, zero padding of 2 frames on the past side only, 1 pixel on each side
in space), residual blocks (RMS norm over channels -> SiLU -> causal conv, twice, plus a 1x1x1 shortcut where
the width changes), one single-head spatial self-attention per frame in each mid block, downsampling (zero pad
right/bottom, 3x3 stride-2 conv per frame; then a (3,1,1) stride-2 time conv) and upsampling (a (3,1,1) time conv
to 2x channels interleaved into 2x frames; then nearest 2x and a 3x3 conv per frame, halving the width).

Chunks and the feature cache, as the reference: the video is processed in temporal chunks (encoder: the first
frame alone, then 4 frames; decoder: one latent frame at a time). Every causal conv keeps the last CACHE_T
(2) frames of its input as its cache, so a chunk sees exactly the frames it would see in one pass over the whole
video; the cache starts as zeros, which is the causal zero padding. The first chunk is handled alone as the
reference does: it skips the time convs of the resamplers (a first latent frame decodes to one frame, a first
frame encodes alone), and the upsamplers' caches stay zero after it (diffusers' "Rep" state). `encode` and
`decode` run the first chunk, then a `jax.lax.scan` over the rest carrying the cache pytree: an 81-frame video
(21 latent frames) needs the memory of one chunk, whatever its length.

Latent normalisation: the transformer works on (z - latents_mean) / latents_std (config.json's constants);
WanPipeline decodes `latents * latents_std + latents_mean`. `encode` / `decode` apply them unless
normalized=False.

Precision (house style): parameters in `param_dtype` (float32), convolutions and attention matmuls in `dtype`
(bfloat16 by default, models/common/dtypes.py); RMS norms and the attention softmax in float32; outputs float32.
Not implemented: Wan2.2's residual up/down blocks and patchified input (`is_residual`, `patch_size`), encoder
attention (`attn_scales`), spatial tiling; refused in one line by `WanVAEConfig.from_diffusers`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from amd_jax.errors import ConfigError
from amd_jax.models.common.attention import xla_attention
from amd_jax.models.common.dtypes import DTYPES, dtype as dtype_of

CLASS_NAME = "AutoencoderKLWan"
CACHE_T = 2  # frames of its input a causal 3x3x3 conv keeps between chunks (its temporal kernel minus one)
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamp
WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
# config.json fields of the architecture, with diffusers' defaults (= Wan2.1's VAE).
ARCH_DEFAULTS: dict[str, Any] = dict(
    base_dim=96, decoder_base_dim=None, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
    temperal_downsample=(False, True, True), in_channels=3, out_channels=3,
    latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD)
# Wan2.2 / variant fields: only their "absent" value is implemented (dropout is inert at inference).
UNSUPPORTED = {"is_residual": False, "patch_size": None, "attn_scales": []}


@dataclasses.dataclass(frozen=True)
class WanVAEConfig:
    """A Wan VAE: the architecture fields of diffusers' config.json (`ARCH_DEFAULTS`) plus run-time dtypes."""

    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    in_channels: int = 3
    out_channels: int = 3
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    dtype: str = "bfloat16"
    param_dtype: str = "float32"

    def __post_init__(self):
        for name in ("dim_mult", "temperal_downsample", "latents_mean", "latents_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            problems.append(f"temperal_downsample={self.temperal_downsample} needs len(dim_mult) - 1 = "
                            f"{len(self.dim_mult) - 1} entries")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            problems.append(f"latents_mean / latents_std need z_dim={self.z_dim} entries each")
        if self.dtype not in DTYPES or self.param_dtype not in DTYPES:
            problems.append(f"dtype={self.dtype!r} / param_dtype={self.param_dtype!r}: use one of {tuple(DTYPES)}")
        if problems:
            raise ConfigError("WanVAEConfig: " + "; ".join(problems) + ".")

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame after the first (4 for Wan2.1)."""
        return 2 ** sum(self.temperal_downsample)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel along height and width (8 for Wan2.1)."""
        return 2 ** (len(self.dim_mult) - 1)

    def arch(self) -> dict[str, Any]:
        """The architecture fields (what config.json stores)."""
        return {k: getattr(self, k) for k in ARCH_DEFAULTS}

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], what: str = "config.json", **run) -> "WanVAEConfig":
        """The config of a diffusers `AutoencoderKLWan` config.json dict (`run`: dtype, param_dtype); one
        ConfigError line for another class or a Wan2.2 option."""
        name = config.get("_class_name")
        if name not in (None, CLASS_NAME):
            raise ConfigError(f"{what} is a {name}, not an {CLASS_NAME}: point it at the vae/ folder of a Wan2.1 "
                              "diffusers checkpoint (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers/vae).")
        bad = {k: config[k] for k, v in UNSUPPORTED.items() if config.get(k) not in (v, None)}
        if bad:
            raise ConfigError(f"{what}: {bad} are Wan2.2 / variant options this Flax VAE does not implement: use "
                              "a Wan2.1 VAE.")
        return cls(**{k: config.get(k, v) if config.get(k) is not None else v for k, v in ARCH_DEFAULTS.items()},
                   **run)


# ---------------------------------------------------------------------------------------------- layers
def _zeros_past(x: jax.Array, frames: int = CACHE_T) -> jax.Array:
    return jnp.zeros(x.shape[:1] + (frames,) + x.shape[2:], x.dtype)


def causal_conv(x, cache, features: int, name: str, kernel=(3, 3, 3), **kw):
    """A (kt, k, k) conv (a submodule `name` of the calling compact module) over [cache, x] along time: no time
    padding, the cache is the causal past (None: zeros, i.e. the causal zero padding of the first chunk); 'same'
    zero padding in space. Returns (y, new cache = the last kt - 1 frames of [cache, x])."""
    kt, kh, kw_ = kernel
    past = _zeros_past(x, kt - 1) if cache is None else cache.astype(x.dtype)
    full = jnp.concatenate([past, x], axis=1)
    conv = nn.Conv(features, kernel, padding=((0, 0), (kh // 2, kh // 2), (kw_ // 2, kw_ // 2)), name=name, **kw)
    return conv(full), full[:, full.shape[1] - (kt - 1):]


class RMSNorm(nn.Module):
    """diffusers' WanRMS_norm: x / max(||x||_channels, 1e-12) * sqrt(C) * gamma, in float32, cast to dtype."""

    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.ones, (dim,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True))
        return (x32 / jnp.maximum(norm, 1e-12) * dim ** 0.5 * gamma.astype(jnp.float32)).astype(self.dtype)


def _conv(features, kernel, dtype, param_dtype, name, **kw):
    return nn.Conv(features, kernel, dtype=dtype, param_dtype=param_dtype, name=name, **kw)


class ResidualBlock(nn.Module):
    """RMS norm -> SiLU -> causal conv, twice, plus the input (through a 1x1x1 conv where the width changes)."""

    out_dim: int
    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cache = cache or {}
        h = x if x.shape[-1] == self.out_dim else _conv(self.out_dim, (1, 1, 1), name="conv_shortcut", **kw)(x)
        y = nn.silu(RMSNorm(**kw, name="norm1")(x))
        y, c1 = causal_conv(y, cache.get("conv1"), self.out_dim, "conv1", **kw)
        y = nn.silu(RMSNorm(**kw, name="norm2")(y))  # (dropout: inert at inference)
        y, c2 = causal_conv(y, cache.get("conv2"), self.out_dim, "conv2", **kw)
        return y + h, {"conv1": c1, "conv2": c2}


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (1x1 conv q/k/v and projection), residual."""

    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, t, h, w, c = x.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = RMSNorm(**kw, name="norm")(x).reshape(b * t, h, w, c)
        qkv = _conv(3 * c, (1, 1), name="to_qkv", **kw)(y).reshape(b * t, h * w, 1, 3 * c)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        y = xla_attention(q, k, v).reshape(b * t, h, w, c)
        y = _conv(c, (1, 1), name="proj", **kw)(y)
        return x + y.reshape(b, t, h, w, c).astype(x.dtype)


class MidBlock(nn.Module):
    """Residual block, per-frame attention, residual block."""

    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cache = cache or {}
        x, c0 = ResidualBlock(x.shape[-1], **kw, name="resnets_0")(x, cache.get("resnets_0"))
        x = AttentionBlock(**kw, name="attentions_0")(x)
        x, c1 = ResidualBlock(x.shape[-1], **kw, name="resnets_1")(x, cache.get("resnets_1"))
        return x, {"resnets_0": c0, "resnets_1": c1}


class Resample(nn.Module):
    """diffusers' WanResample: 'upsample2d' / 'upsample3d' (time conv to 2x frames, then nearest 2x in space and a
    3x3 conv to out_dim) or 'downsample2d' / 'downsample3d' (zero pad right/bottom, 3x3 stride-2 conv, then a
    (3,1,1) stride-2 time conv over [last frame of the previous chunk, x]). The first chunk skips the time conv."""

    mode: str
    out_dim: int
    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache, first: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, _, _, _, c = x.shape
        new_cache = {}
        if self.mode == "upsample3d":
            if first:  # not time-upsampled; the cache stays zero (diffusers' "Rep")
                new_cache["time_conv"] = _zeros_past(x)
            else:
                y, new_cache["time_conv"] = causal_conv(x, cache["time_conv"], 2 * c, "time_conv", (3, 1, 1), **kw)
                t, h, w = y.shape[1:4]  # [b, t, h, w, (2, c)] -> [b, (t, 2), h, w, c]
                x = y.reshape(b, t, h, w, 2, c).transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, h, w, c)
        t, h, w = x.shape[1:4]
        y = x.reshape(b * t, h, w, c)
        if self.mode.startswith("upsample"):
            y = jnp.repeat(jnp.repeat(y, 2, axis=1), 2, axis=2)  # nearest-exact at an exact 2x
            y = _conv(self.out_dim, (3, 3), padding=((1, 1), (1, 1)), name="resample_1", **kw)(y)
        else:
            y = jnp.pad(y, ((0, 0), (0, 1), (0, 1), (0, 0)))
            y = _conv(self.out_dim, (3, 3), strides=(2, 2), padding="VALID", name="resample_1", **kw)(y)
        y = y.reshape((b, t) + y.shape[1:])
        if self.mode == "downsample3d":
            new_cache["time_conv"] = y[:, -1:]
            if not first:  # the first chunk passes unchanged
                y = jnp.concatenate([cache["time_conv"].astype(y.dtype), y], axis=1)
                y = _conv(self.out_dim, (3, 1, 1), strides=(2, 1, 1), padding="VALID", name="time_conv", **kw)(y)
        return y, new_cache


def _dims(base: int, mult) -> list[int]:
    return [base * u for u in mult]


class Encoder(nn.Module):
    """diffusers' WanEncoder3d on one chunk: conv_in, down_blocks (residual blocks, then a resampler after every
    level but the last), mid block, RMS norm, SiLU, conv_out to 2 z_dim (mean, logvar). Returns (x, new cache)."""

    cfg: WanVAEConfig

    @nn.compact
    def __call__(self, x, cache, first: bool):
        cfg = self.cfg
        kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype))
        cache, new = cache or {}, {}
        dims = _dims(cfg.base_dim, (1,) + cfg.dim_mult)
        x, new["conv_in"] = causal_conv(x.astype(kw["dtype"]), cache.get("conv_in"), dims[0], "conv_in", **kw)
        j = 0
        for i, out_dim in enumerate(dims[1:]):
            for _ in range(cfg.num_res_blocks):
                name = f"down_blocks_{j}"
                x, new[name] = ResidualBlock(out_dim, **kw, name=name)(x, cache.get(name))
                j += 1
            if i != len(cfg.dim_mult) - 1:
                name = f"down_blocks_{j}"
                mode = "downsample3d" if cfg.temperal_downsample[i] else "downsample2d"
                x, new[name] = Resample(mode, out_dim, **kw, name=name)(x, cache.get(name), first)
                j += 1
        x, new["mid_block"] = MidBlock(**kw, name="mid_block")(x, cache.get("mid_block"))
        x = nn.silu(RMSNorm(**kw, name="norm_out")(x))
        x, new["conv_out"] = causal_conv(x, cache.get("conv_out"), 2 * cfg.z_dim, "conv_out", **kw)
        return x, new


class UpBlock(nn.Module):
    """diffusers' WanUpBlock: num_res_blocks + 1 residual blocks, then a resampler to out_dim / 2 (Wan2.1)."""

    out_dim: int
    num_res_blocks: int
    mode: str | None
    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache, first: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cache, new = cache or {}, {}
        for k in range(self.num_res_blocks + 1):
            name = f"resnets_{k}"
            x, new[name] = ResidualBlock(self.out_dim, **kw, name=name)(x, cache.get(name))
        if self.mode is not None:
            x, new["upsamplers_0"] = Resample(self.mode, self.out_dim // 2, **kw, name="upsamplers_0")(
                x, cache.get("upsamplers_0"), first)
        return x, new


class Decoder(nn.Module):
    """diffusers' WanDecoder3d on one chunk: conv_in, mid block, up_blocks, RMS norm, SiLU, conv_out. Returns
    (frames, new cache)."""

    cfg: WanVAEConfig

    @nn.compact
    def __call__(self, z, cache, first: bool):
        cfg = self.cfg
        kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype))
        cache, new = cache or {}, {}
        mult = cfg.dim_mult
        dims = _dims(cfg.decoder_base_dim or cfg.base_dim, (mult[-1],) + mult[::-1])
        upsample = cfg.temperal_downsample[::-1]
        x, new["conv_in"] = causal_conv(z.astype(kw["dtype"]), cache.get("conv_in"), dims[0], "conv_in", **kw)
        x, new["mid_block"] = MidBlock(**kw, name="mid_block")(x, cache.get("mid_block"))
        for i, out_dim in enumerate(dims[1:]):
            mode = None if i == len(mult) - 1 else "upsample3d" if upsample[i] else "upsample2d"
            name = f"up_blocks_{i}"
            x, new[name] = UpBlock(out_dim, cfg.num_res_blocks, mode, **kw, name=name)(x, cache.get(name), first)
        x = nn.silu(RMSNorm(**kw, name="norm_out")(x))
        x, new["conv_out"] = causal_conv(x, cache.get("conv_out"), cfg.out_channels, "conv_out", **kw)
        return x, new


class WanVAE(nn.Module):
    """The VAE's chunk steps; `encode` / `decode` below run them over a whole video."""

    cfg: WanVAEConfig

    def setup(self):
        kw = dict(dtype=dtype_of(self.cfg.dtype), param_dtype=dtype_of(self.cfg.param_dtype))
        self.encoder = Encoder(self.cfg)
        self.quant_conv = nn.Conv(2 * self.cfg.z_dim, (1, 1, 1), **kw)
        self.post_quant_conv = nn.Conv(self.cfg.z_dim, (1, 1, 1), **kw)
        self.decoder = Decoder(self.cfg)

    def encode_chunk(self, video, cache, first: bool):
        """A chunk of frames -> (moments [B, f, h, w, 2 z_dim] float32, new cache)."""
        x, cache = self.encoder(video, cache, first)
        return self.quant_conv(x).astype(jnp.float32), cache

    def decode_chunk(self, z, cache, first: bool):
        """A chunk of raw latents -> (frames [B, T, H, W, out_channels] float32, new cache); unclamped."""
        x, cache = self.decoder(self.post_quant_conv(z), cache, first)
        return x.astype(jnp.float32), cache

    def __call__(self, video):
        """Both paths on a first and a second chunk (for init / eval_shape: every layer runs), video
        [B, 1 + temporal_factor, H, W, C] -> (moments, frames)."""
        moments, cache = self.encode_chunk(video[:, :1], None, True)
        more, _ = self.encode_chunk(video[:, 1:], cache, False)
        z = jnp.concatenate([moments, more], axis=1)[..., :self.cfg.z_dim]
        _, cache = self.decode_chunk(z[:, :1], None, True)
        return jnp.concatenate([moments, more], axis=1), self.decode_chunk(z[:, 1:], cache, False)[0]


# ------------------------------------------------------------------------------------------------ videos
def _run_chunks(model, params, first_chunk, rest, method):
    """Apply `method` to the first chunk (cache None -> zeros), then scan over `rest` [n, B, ...] carrying the
    cache; the outputs concatenated along frames."""
    def apply(x, cache, first):
        return model.apply({"params": params}, x, cache, first, method=method)

    out, cache = apply(first_chunk, None, True)
    if rest.shape[0] == 0:
        return out

    def step(cache, x):
        y, cache = apply(x, cache, False)
        return cache, y

    _, outs = jax.lax.scan(step, cache, rest)  # [n, B, T, ...]
    outs = jnp.moveaxis(outs, 0, 1)
    outs = outs.reshape((outs.shape[0], -1) + outs.shape[3:])
    return jnp.concatenate([out, outs], axis=1)


def _check(cfg: WanVAEConfig, shape, channels: int, temporal: int, spatial: int, what: str) -> None:
    if len(shape) != 5 or shape[-1] != channels:
        raise ConfigError(f"{what} of shape {tuple(shape)}: expected [B, F, H, W, {channels}] (channels last).")
    frames, h, w = shape[1:4]
    if (frames - 1) % temporal or h % spatial or w % spatial:
        raise ConfigError(f"{what} of shape {tuple(shape)}: frames must be {temporal}k+1 and height / width "
                          f"multiples of {spatial}.")


def moments(model: WanVAE, params, video: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Video [B, 1 + 4k, H, W, in_channels] in [-1, 1] -> the posterior (mean, logvar) [B, 1 + k, H/8, W/8,
    z_dim], float32, raw (not normalised); logvar clamped as diffusers."""
    cfg = model.cfg
    _check(cfg, video.shape, cfg.in_channels, cfg.temporal_factor, cfg.spatial_factor, "video")
    b, f = video.shape[:2]
    rest = video[:, 1:].reshape((b, (f - 1) // cfg.temporal_factor, cfg.temporal_factor) + video.shape[2:])
    out = _run_chunks(model, params, video[:, :1], jnp.moveaxis(rest, 1, 0), WanVAE.encode_chunk)
    mean, logvar = jnp.split(out, 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)


def encode(model: WanVAE, params, video: jax.Array, rng: jax.Array | None = None,
           normalized: bool = True) -> jax.Array:
    """Video -> latents (the posterior mean, or a sample with `rng`), normalised with latents_mean / latents_std
    (what the transformer sees) unless normalized=False. float32 [B, 1 + k, H/8, W/8, z_dim]."""
    mean, logvar = moments(model, params, video)
    z = mean if rng is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    return normalize_latents(model.cfg, z) if normalized else z


def decode(model: WanVAE, params, latents: jax.Array, normalized: bool = True, clip: bool = True) -> jax.Array:
    """Latents [B, f, h, w, z_dim] (normalised, as the transformer's, unless normalized=False) -> video
    [B, 1 + 4(f - 1), 8h, 8w, out_channels] float32, clamped to [-1, 1] as the reference unless clip=False.
    One latent frame per chunk, the feature cache carried by a lax.scan."""
    cfg = model.cfg
    _check(cfg, latents.shape, cfg.z_dim, 1, 1, "latents")
    z = denormalize_latents(cfg, latents) if normalized else latents.astype(jnp.float32)
    out = _run_chunks(model, params, z[:, :1], jnp.moveaxis(z[:, 1:, None], 1, 0), WanVAE.decode_chunk)
    return jnp.clip(out, -1.0, 1.0) if clip else out


def _stats(cfg: WanVAEConfig) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(cfg.latents_mean, jnp.float32), jnp.asarray(cfg.latents_std, jnp.float32)


def normalize_latents(cfg: WanVAEConfig, z: jax.Array) -> jax.Array:
    """Raw VAE latents -> the transformer's: (z - latents_mean) / latents_std per channel (last axis)."""
    mean, std = _stats(cfg)
    return (z.astype(jnp.float32) - mean) / std


def denormalize_latents(cfg: WanVAEConfig, latents: jax.Array) -> jax.Array:
    """The transformer's latents -> raw VAE latents, as WanPipeline before vae.decode: latents * std + mean."""
    mean, std = _stats(cfg)
    return latents.astype(jnp.float32) * std + mean


# ------------------------------------------------------------------------------------------- params, counts
def init_params(cfg: WanVAEConfig, rng: jax.Array) -> dict:
    s = cfg.spatial_factor
    video = jnp.zeros((1, 1 + cfg.temporal_factor, s, s, cfg.in_channels), jnp.float32)
    return WanVAE(cfg).init(rng, video)["params"]


def abstract_params(cfg: WanVAEConfig) -> dict:
    """The parameter tree as ShapeDtypeStructs (jax.eval_shape: nothing is allocated)."""
    return jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))


def param_count(cfg: WanVAEConfig | None = None) -> int:
    """Number of parameters of `cfg` (default: the Wan2.1 VAE) by eval_shape."""
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(abstract_params(cfg or WanVAEConfig())))
