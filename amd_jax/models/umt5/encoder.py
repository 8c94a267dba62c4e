"""The umT5 text encoder (Wan2.1's umT5-XXL) in Flax linen: transformers 4.57's PyTorch `UMT5EncoderModel`.

    ids [B, L] --shared (Embed, no scaling)--> h [B, L, D] float32
    num_layers x block:   h += o(attention(q, k, v of rms(h)) + own relative-position bias + padding mask)
                          h += wo(gelu_tanh(wi_0(rms(h))) * wi_1(rms(h)))
    final_layer_norm(h) -> last_hidden_state [B, L, D] float32

What makes it umT5 rather than T5 (transformers' FlaxT5EncoderModel): EVERY layer has its own relative-position
bias table [num_buckets, num_heads] (T5 keeps one in layer 0 and shares its bias). As T5 v1.1: the gated-GELU
feed-forward ('gated-gelu' = transformers' 'gelu_new', the tanh approximation), RMS norm without mean subtraction
or bias (eps 1e-6), no bias in any linear, and no 1/sqrt(d_kv) scaling of q.k. Dropout is not implemented (the
encoder is frozen: inference only).

Precision: parameters in `param_dtype` (float32); the linears and the attention matmuls in `dtype` (bfloat16 by
default); the residual stream, the RMS statistics, the position bias, the padding mask and the softmax in float32
(the scores are accumulated in float32); outputs are float32. One difference from transformers run in bf16: it
keeps `wo` in float32 (`_keep_in_fp32_modules`, an fp16-overflow guard); here `wo` runs in `dtype` like every
linear (bfloat16 has float32's range), which the bfloat16 parity test covers.

The parameter tree mirrors the PyTorch names (models/umt5/weights.py maps them): shared/embedding,
encoder/block_<i>/layer_0/{SelfAttention/{q,k,v,o,relative_attention_bias}, layer_norm},
encoder/block_<i>/layer_1/{DenseReluDense/{wi_0,wi_1,wo}, layer_norm}, encoder/final_layer_norm. With
`scan_layers=True` the blocks are one `encoder/block` subtree with a leading layer axis, run by `nn.scan`
(`stack_blocks` / `unstack_blocks` convert); `remat` rematerialises each block ('block': everything, 'dots':
keeps the matmul outputs without batch dims).

`prompt_embeds` does with the last hidden state what diffusers' WanPipeline._get_t5_prompt_embeds does: keeps
the first sum(mask) tokens of each row and zeroes the rest.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from amd_jax.errors import ConfigError
from amd_jax.models.common.dtypes import DTYPES
from amd_jax.models.common.remat import POLICIES, remat

ARCH_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
               "relative_attention_num_buckets", "relative_attention_max_distance", "layer_norm_epsilon")
REMAT_POLICIES = POLICIES  # the remat knob's values (models/common/remat.py)
BLOCKS = "block"  # the PyTorch ModuleList's name: block_<i> per layer, or one scanned `block`

# Wan2.1's text_encoder/config.json (google/umt5-xxl's encoder).
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6)


@dataclasses.dataclass(frozen=True)
class UMT5Config:
    """The encoder's architecture (transformers' UMT5Config field names) plus compute knobs: `dtype` of the
    matmuls, `param_dtype` of the parameters, `scan_layers` (one nn.scan over stacked blocks) and `remat`
    (one of REMAT_POLICIES, per block)."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "none"

    def __post_init__(self):
        problems = [f"{k}={getattr(self, k)} must be a positive integer" for k in ARCH_FIELDS[:8]
                    if not (isinstance(getattr(self, k), int) and getattr(self, k) > 0)]
        if not problems and self.relative_attention_num_buckets < 4:
            problems.append(f"relative_attention_num_buckets={self.relative_attention_num_buckets} must be >= 4 "
                            "(half a direction's buckets are exact offsets, half logarithmic)")
        if not problems and self.relative_attention_max_distance <= self.relative_attention_num_buckets // 4:
            problems.append(f"relative_attention_max_distance={self.relative_attention_max_distance} must exceed "
                            f"num_buckets // 4 = {self.relative_attention_num_buckets // 4}")
        if self.dtype not in DTYPES or self.param_dtype not in DTYPES:
            problems.append(f"dtype={self.dtype!r} / param_dtype={self.param_dtype!r}: use one of {tuple(DTYPES)}")
        if self.remat not in REMAT_POLICIES:
            problems.append(f"remat={self.remat!r}: use one of {REMAT_POLICIES}")
        if problems:
            raise ConfigError("UMT5Config: " + "; ".join(problems) + ".")

    @property
    def jnp_dtype(self):
        return DTYPES[self.dtype]

    @property
    def jnp_param_dtype(self):
        return DTYPES[self.param_dtype]

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv

    def arch(self) -> dict:
        """The architecture fields (what config.json stores; the rest are run-time choices)."""
        return {k: getattr(self, k) for k in ARCH_FIELDS}


# ------------------------------------------------------------------------------------- relative positions
def relative_position_bucket(relative: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """int32 bucket of each relative position (key index - query index), bidirectional (an encoder): transformers'
    UMT5Attention._relative_position_bucket step for step, in float32 as PyTorch computes it, so the logarithmic
    buckets' edges (e.g. distances 16, 32, 64 for Wan's 32 buckets up to 128) fall on the same side.

    Half the buckets for keys after the query, half for keys before it (and itself); in each half, distances below
    a quarter of num_buckets get their own bucket, larger ones share logarithmically wider buckets up to
    max_distance, and all farther ones the last bucket."""
    relative = np.asarray(relative, np.int64)
    half = num_buckets // 2
    max_exact = half // 2
    distance = np.abs(relative)
    # log(0) is never used (distance < max_exact there); maximum(.., 1) only keeps numpy from warning
    ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
    ratio = ratio / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    large = np.minimum(max_exact + ratio.astype(np.int64), half - 1)
    return ((relative > 0) * half + np.where(distance < max_exact, distance, large)).astype(np.int32)


def relative_position_buckets(length: int, cfg: UMT5Config) -> np.ndarray:
    """[length, length] int32: the bucket of (query i, key j), i.e. of j - i, for self-attention over `length`."""
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]
    return relative_position_bucket(relative, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance)


# ------------------------------------------------------------------------------------------------ network
def rms_norm_weight(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """UMT5LayerNorm: x / sqrt(mean(x**2) + eps) * weight, no mean subtraction, no bias; float32 throughout."""
    x = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(variance + eps) * weight.astype(jnp.float32)


class RMSNorm(nn.Module):
    """UMT5LayerNorm with its `weight` (initialised to ones), float32 in and out."""

    cfg: UMT5Config

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.ones, (self.cfg.d_model,), self.cfg.jnp_param_dtype)
        return rms_norm_weight(x, weight, self.cfg.layer_norm_epsilon)


def _linear(cfg: UMT5Config, features: int, name: str, fan_in: int) -> nn.Dense:
    """A bias-free linear in cfg.dtype; normal(fan_in**-0.5) init (T5's Mesh-TF init, up to per-weight factors)."""
    return nn.Dense(features, use_bias=False, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
                    kernel_init=nn.initializers.normal(fan_in ** -0.5), name=name)


class SelfAttention(nn.Module):
    """UMT5Attention (encoder self-attention): softmax(q k^T + bias + mask) v, no scaling, heads of d_kv, plus this
    layer's relative-position bias table [num_buckets, num_heads]."""

    cfg: UMT5Config

    @nn.compact
    def __call__(self, x, buckets, mask_bias):
        cfg, (b, n, _) = self.cfg, x.shape
        x = x.astype(cfg.jnp_dtype)

        def heads(name):
            return _linear(cfg, cfg.inner_dim, name, cfg.d_model)(x).reshape(b, n, cfg.num_heads, cfg.d_kv)

        q, k, v = heads("q"), heads("k"), heads("v")
        table = nn.Embed(cfg.relative_attention_num_buckets, cfg.num_heads, dtype=jnp.float32,
                         param_dtype=cfg.jnp_param_dtype, embedding_init=nn.initializers.normal(cfg.d_model ** -0.5),
                         name="relative_attention_bias")
        position_bias = jnp.transpose(table(buckets), (2, 0, 1))  # [H, Lq, Lk] float32
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores + (position_bias[None] + mask_bias)
        probs = jax.nn.softmax(scores, axis=-1).astype(cfg.jnp_dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, n, cfg.inner_dim)
        return _linear(cfg, cfg.d_model, "o", cfg.inner_dim)(out).astype(jnp.float32)


class GatedGeluFF(nn.Module):
    """UMT5DenseGatedActDense: wo(gelu_tanh(wi_0 x) * wi_1 x)."""

    cfg: UMT5Config

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        x = x.astype(cfg.jnp_dtype)
        gate = nn.gelu(_linear(cfg, cfg.d_ff, "wi_0", cfg.d_model)(x), approximate=True)
        h = gate * _linear(cfg, cfg.d_ff, "wi_1", cfg.d_model)(x)
        return _linear(cfg, cfg.d_model, "wo", cfg.d_ff)(h).astype(jnp.float32)


class AttentionLayer(nn.Module):
    cfg: UMT5Config

    @nn.compact
    def __call__(self, h, buckets, mask_bias):
        normed = RMSNorm(self.cfg, name="layer_norm")(h)
        return h + SelfAttention(self.cfg, name="SelfAttention")(normed, buckets, mask_bias)


class FeedForwardLayer(nn.Module):
    cfg: UMT5Config

    @nn.compact
    def __call__(self, h):
        return h + GatedGeluFF(self.cfg, name="DenseReluDense")(RMSNorm(self.cfg, name="layer_norm")(h))


class Block(nn.Module):
    """UMT5Block of an encoder: pre-norm self-attention then pre-norm FFN, each residual; h stays float32.

    Returns (h, None), the carry signature of `nn.scan`, so the same class runs looped or scanned."""

    cfg: UMT5Config

    @nn.compact
    def __call__(self, h, buckets, mask_bias):
        h = AttentionLayer(self.cfg, name="layer_0")(h, buckets, mask_bias)
        return FeedForwardLayer(self.cfg, name="layer_1")(h), None


class Stack(nn.Module):
    """UMT5Stack (encoder): the blocks, looped or scanned, then the final RMS norm."""

    cfg: UMT5Config

    @nn.compact
    def __call__(self, h, buckets, mask_bias):
        cfg = self.cfg
        scanned = cfg.scan_layers and cfg.num_layers > 1
        block = remat(Block, cfg.remat, in_scan=scanned)
        if scanned:
            stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers)
            h, _ = stack(cfg, name=BLOCKS)(h, buckets, mask_bias)
        else:
            for i in range(cfg.num_layers):
                h, _ = block(cfg, name=f"{BLOCKS}_{i}")(h, buckets, mask_bias)
        return RMSNorm(cfg, name="final_layer_norm")(h)


class UMT5Encoder(nn.Module):
    """(input_ids int [B, L], attention_mask [B, L] of 1 (token) / 0 (padding), or None: all tokens) ->
    last_hidden_state [B, L, d_model] float32, as `UMT5EncoderModel(...).last_hidden_state`."""

    cfg: UMT5Config

    @nn.compact
    def __call__(self, input_ids, attention_mask=None):
        cfg = self.cfg
        ids = jnp.asarray(input_ids, jnp.int32)
        if ids.ndim != 2:
            raise ValueError(f"UMT5Encoder expects input_ids [B, L], got shape {ids.shape}.")
        n = ids.shape[1]
        shared = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=jnp.float32, param_dtype=cfg.jnp_param_dtype,
                          embedding_init=nn.initializers.normal(1.0), name="shared")
        h = shared(ids).astype(jnp.float32)
        mask = jnp.ones(ids.shape, jnp.float32) if attention_mask is None else \
            jnp.asarray(attention_mask).astype(jnp.float32)
        # as transformers: (1 - mask) * finfo.min added to the bias (a fully padded row attends uniformly)
        mask_bias = ((1.0 - mask) * jnp.finfo(jnp.float32).min)[:, None, None, :]
        buckets = jnp.asarray(relative_position_buckets(n, cfg))
        return Stack(cfg, name="encoder")(h, buckets, mask_bias)


def prompt_embeds(last_hidden_state: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """WanPipeline._get_t5_prompt_embeds' post-processing: row b keeps its first sum(mask[b]) tokens, the rest
    become zeros (float32 [B, L, D]); the transformer then cross-attends to all L tokens, padding included."""
    lengths = jnp.sum(jnp.asarray(attention_mask) > 0, axis=1)
    keep = jnp.arange(last_hidden_state.shape[1])[None, :] < lengths[:, None]
    return jnp.where(keep[..., None], last_hidden_state.astype(jnp.float32), 0.0)


# ------------------------------------------------------------------------------------------ params and apply
def init_params(cfg: UMT5Config, rng: jax.Array) -> dict:
    """Fresh parameters (random; the encoder is only ever used with released weights)."""
    ids = jnp.zeros((1, 2), jnp.int32)
    return UMT5Encoder(cfg).init(rng, ids)["params"]


def abstract_params(cfg: UMT5Config) -> dict:
    """The parameter tree as ShapeDtypeStructs (nothing allocated)."""
    return jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))


def param_count(cfg: UMT5Config) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(abstract_params(cfg)))


def encode(cfg: UMT5Config, params, input_ids, attention_mask) -> jax.Array:
    """Wan's text conditioning: the encoder's last hidden state with the padding zeroed (`prompt_embeds`)."""
    hidden = UMT5Encoder(cfg).apply({"params": params}, input_ids, attention_mask)
    return prompt_embeds(hidden, attention_mask)


# ----------------------------------------------------------------------------------------- stacked blocks
def _block_index(key: str) -> int | None:
    prefix = BLOCKS + "_"
    return int(key[len(prefix):]) if key.startswith(prefix) and key[len(prefix):].isdigit() else None


def stack_blocks(params) -> dict:
    """Looped tree (encoder/block_<i>) -> the `scan_layers=True` tree (encoder/block with a leading layer axis)."""
    encoder = dict(params["encoder"])
    indices = sorted(i for k in encoder if (i := _block_index(k)) is not None)
    if indices != list(range(len(indices))) or not indices:
        raise ValueError(f"stack_blocks: encoder blocks {indices} are not numbered 0..n-1.")
    layers = [encoder.pop(f"{BLOCKS}_{i}") for i in indices]
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs),
                                     *layers)
    return {**params, "encoder": {**encoder, BLOCKS: stacked}}


def unstack_blocks(params) -> dict:
    """Inverse of `stack_blocks`."""
    encoder = dict(params["encoder"])
    stacked = encoder.pop(BLOCKS)
    depth = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    for i in range(depth):
        encoder[f"{BLOCKS}_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
    return {**params, "encoder": encoder}
