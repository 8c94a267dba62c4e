"""Our own Flax SDXL UNet: the function and parameter tree of diffusers 0.39's FlaxUNet2DConditionModel, plus
scan over repeated transformer layers and per-block rematerialisation.

Why own it: diffusers dropped its Flax classes in 0.40, and a full SDXL generator step only compiles within a
small host's memory (and fits a pod's HBM) with the 10-deep transformer stacks scanned and the blocks remat'd,
which cannot be done from outside diffusers' modules.

Covered configs: those `weights.check_unet_config` accepts (SDXL's text_time addition embedding, CrossAttnDown /
Down / MidCrossAttn / CrossAttnUp / Up blocks, per-block `transformer_layers_per_block`, linear or 1x1-conv
projection). With `scan_layers=False` the parameter tree is diffusers' (same names and shapes), so the
PyTorch loader, exporter and sharding rules apply unchanged; `scan_layers=True` stores every Transformer2D with
more than one layer as one `transformer_blocks` subtree with a leading layer axis (`stack_layers` /
`unstack_layers` convert). Computation runs in `dtype`; group/layer norms and the attention softmax run in
float32; the GEGLU uses the exact erf GELU (as PyTorch, which SDXL was trained with) unless `exact_gelu=False`.
Dropout is not implemented (inference-only, as `unet_apply` runs diffusers' module): `train=True` with
`dropout > 0` raises.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from amd_jax.models.common.attention import AttentionCore
from amd_jax.models.common.embeddings import timestep_embedding
from amd_jax.models.common.remat import POLICIES, remat

REMAT_POLICIES = POLICIES  # the remat knob's values (models/common/remat.py)
_LAYERS = "transformer_blocks"


def _group_norm(name: str) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, epsilon=1e-5, dtype=jnp.float32, name=name)


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name=name)


def _conv(features: int, dtype, name: str, kernel: int = 3, stride: int = 1) -> nn.Conv:
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   dtype=dtype, name=name)


class TimestepMLP(nn.Module):
    """linear_1 -> SiLU -> linear_2 (diffusers' TimestepEmbedding; also the text_time addition embedding)."""
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.silu(nn.Dense(self.features, dtype=self.dtype, name="linear_1")(x))
        return nn.Dense(self.features, dtype=self.dtype, name="linear_2")(x)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv, + projected time embedding, GroupNorm-SiLU-conv, + (1x1-projected if needed) input."""
    out_channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, temb):
        h = _conv(self.out_channels, self.dtype, "conv1")(nn.silu(_group_norm("norm1")(x)))
        h = h + nn.Dense(self.out_channels, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))[:, None, None]
        h = _conv(self.out_channels, self.dtype, "conv2")(nn.silu(_group_norm("norm2")(h)))
        if x.shape[-1] != self.out_channels:
            x = _conv(self.out_channels, self.dtype, "conv_shortcut", kernel=1)(x)
        return h + x


class Resample(nn.Module):
    """2x nearest upsampling then a 3x3 conv (`up`), or a stride-2 3x3 conv."""
    out_channels: int
    up: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.up:
            b, h, w, c = x.shape
            x = jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")
        return _conv(self.out_channels, self.dtype, "conv", stride=1 if self.up else 2)(x)


class Attention(nn.Module):
    """Multi-head attention of x over `context` (x itself when None) through `attention_core`'s kernel (the
    default, 'xla', computes the scores and the softmax in float32)."""
    heads: int
    dtype: Any = jnp.float32
    attention_core: AttentionCore = AttentionCore()

    @nn.compact
    def __call__(self, x, context=None):
        context = x if context is None else context
        dim = x.shape[-1]
        head_dim = dim // self.heads
        inner = head_dim * self.heads

        def heads(name, src):
            y = nn.Dense(inner, use_bias=False, dtype=self.dtype, name=name)(src)
            return y.reshape(*y.shape[:2], self.heads, head_dim)

        out = self.attention_core(heads("to_q", x), heads("to_k", context), heads("to_v", context))
        out = out.reshape(*x.shape[:2], inner)
        return nn.Dense(dim, dtype=self.dtype, name="to_out_0")(out)


class GEGLU(nn.Module):
    """proj to 2 x 4*dim, then value * GELU(gate)."""
    dim: int
    exact_gelu: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        value, gate = jnp.split(nn.Dense(self.dim * 8, dtype=self.dtype, name="proj")(x), 2, axis=-1)
        return value * nn.gelu(gate, approximate=not self.exact_gelu)


class FeedForward(nn.Module):
    """GEGLU (net_0) then a linear back to dim (net_2); diffusers' names."""
    exact_gelu: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        h = GEGLU(dim, self.exact_gelu, self.dtype, name="net_0")(x)
        return nn.Dense(dim, dtype=self.dtype, name="net_2")(h)


class TransformerLayer(nn.Module):
    """Pre-norm self-attention, cross-attention and GEGLU feed-forward, each residual (BasicTransformerBlock).

    Returns (h, None), the carry signature of `nn.scan`, so the same class runs looped or scanned.
    """
    heads: int
    only_cross_attention: bool = False
    exact_gelu: bool = True
    dtype: Any = jnp.float32
    attention_core: AttentionCore = AttentionCore()

    @nn.compact
    def __call__(self, h, context):
        self_ctx = context if self.only_cross_attention else None
        attn = functools.partial(Attention, self.heads, self.dtype, self.attention_core)
        h = h + attn(name="attn1")(_layer_norm("norm1")(h), self_ctx)
        h = h + attn(name="attn2")(_layer_norm("norm2")(h), context)
        h = h + FeedForward(self.exact_gelu, self.dtype, name="ff")(_layer_norm("norm3")(h))
        return h, None


class Transformer2D(nn.Module):
    """GroupNorm, project in, `depth` TransformerLayers over the H*W tokens, project out, + input."""
    heads: int
    depth: int = 1
    use_linear_projection: bool = True
    only_cross_attention: bool = False
    scan_layers: bool = False
    remat: str = "none"
    exact_gelu: bool = True
    dtype: Any = jnp.float32
    attention_core: AttentionCore = AttentionCore()

    @nn.compact
    def __call__(self, x, context):
        b, hgt, wid, c = x.shape
        inner = self.heads * (c // self.heads)
        h = _group_norm("norm")(x)
        if self.use_linear_projection:
            h = nn.Dense(inner, dtype=self.dtype, name="proj_in")(h.reshape(b, hgt * wid, c))
        else:
            h = _conv(inner, self.dtype, "proj_in", kernel=1)(h).reshape(b, hgt * wid, inner)
        h = self.layers(h, context)
        if self.use_linear_projection:
            h = nn.Dense(inner, dtype=self.dtype, name="proj_out")(h).reshape(b, hgt, wid, inner)
        else:
            h = _conv(inner, self.dtype, "proj_out", kernel=1)(h.reshape(b, hgt, wid, inner))
        return h + x

    def layers(self, h, context):
        """The transformer layers: one nn.scan over stacked params (`scan_layers`, depth > 1) or a loop."""
        kw = dict(heads=self.heads, only_cross_attention=self.only_cross_attention, exact_gelu=self.exact_gelu,
                  dtype=self.dtype, attention_core=self.attention_core)
        scanned = self.scan_layers and self.depth > 1
        layer = remat(TransformerLayer, self.remat, in_scan=scanned)
        if scanned:
            stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=nn.broadcast, length=self.depth)
            return stack(**kw, name=_LAYERS)(h, context)[0]
        for i in range(self.depth):
            h, _ = layer(**kw, name=f"{_LAYERS}_{i}")(h, context)
        return h


class Block(nn.Module):
    """One UNet level: `num_layers` ResnetBlocks (each followed by a Transformer2D when `attention`), then an
    optional down/up-sampler. Up blocks (`up=True`) concatenate one skip tensor before each ResnetBlock and
    return only the hidden states; down blocks also return every intermediate (the skips)."""
    out_channels: int
    num_layers: int
    up: bool
    resample: bool
    attention: bool
    transformer: dict  # Transformer2D fields (used when `attention`)
    remat: str = "none"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, temb, context, skips=()):
        resnet = remat(ResnetBlock, self.remat)
        outputs = ()
        for i in range(self.num_layers):
            if self.up:
                h, skips = jnp.concatenate((h, skips[-1]), axis=-1), skips[:-1]
            h = resnet(self.out_channels, self.dtype, name=f"resnets_{i}")(h, temb)
            if self.attention:
                h = Transformer2D(**self.transformer, name=f"attentions_{i}")(h, context)
            outputs += (h,)
        if self.resample:
            h = Resample(self.out_channels, self.up, self.dtype, name=f"{'up' if self.up else 'down'}samplers_0")(h)
            outputs += (h,)
        return h if self.up else (h, outputs)


class MidBlock(nn.Module):
    """ResnetBlock, Transformer2D, ResnetBlock at the lowest resolution (UNetMidBlock2DCrossAttn)."""
    transformer: dict
    remat: str = "none"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, temb, context):
        resnet = remat(ResnetBlock, self.remat)
        c = h.shape[-1]
        h = resnet(c, self.dtype, name="resnets_0")(h, temb)
        h = Transformer2D(**self.transformer, name="attentions_0")(h, context)
        return resnet(c, self.dtype, name="resnets_1")(h, temb)


def _per_block(value, n: int) -> tuple:
    """A per-down-block config value (diffusers allows one scalar for all blocks)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


class SDXLUNet(nn.Module):
    """diffusers' UNet2DConditionModel (SDXL family) in Flax; fields are its config keys plus our knobs.

    Call: `(sample NCHW, timesteps, encoder_hidden_states, added_cond_kwargs={'text_embeds','time_ids'},
    return_dict=False)` -> `(noise_pred NCHW,)` in `dtype` (return_dict=True: `{'sample': noise_pred}`).
    `attention_head_dim` is the number of heads per block, as in diffusers (its historical naming).
    """
    sample_size: int = 128
    in_channels: int = 4
    out_channels: int = 4
    down_block_types: tuple = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    mid_block_type: str | None = "UNetMidBlock2DCrossAttn"
    only_cross_attention: bool | tuple = False
    block_out_channels: tuple = (320, 640, 1280)
    layers_per_block: int = 2
    attention_head_dim: int | tuple = (5, 10, 20)
    num_attention_heads: int | tuple | None = None
    cross_attention_dim: int = 2048
    dropout: float = 0.0
    use_linear_projection: bool = True
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    transformer_layers_per_block: int | tuple = (1, 2, 10)
    addition_embed_type: str | None = "text_time"
    addition_time_embed_dim: int | None = 256
    projection_class_embeddings_input_dim: int | None = 2816
    dtype: Any = jnp.float32
    scan_layers: bool = False
    remat: str = "none"
    exact_gelu: bool = True
    attention_core: AttentionCore = AttentionCore()  # the attention kernel (models/attention.py)

    def init_weights(self, rng: jax.Array):
        """Parameters from `rng` (what diffusers' init_weights returns; `weights.abstract_params` traces it)."""
        sample = jnp.zeros((1, self.in_channels, self.sample_size, self.sample_size), jnp.float32)
        context = jnp.zeros((1, 1, self.cross_attention_dim), jnp.float32)
        added = None
        if self.addition_embed_type == "text_time":
            n_ids = self.num_time_ids()
            text_dim = self.projection_class_embeddings_input_dim - n_ids * self.addition_time_embed_dim
            added = {"text_embeds": jnp.zeros((1, text_dim), jnp.float32),
                     "time_ids": jnp.zeros((1, n_ids), jnp.float32)}
        return self.init(rng, sample, jnp.ones((1,), jnp.int32), context, added)["params"]

    def num_time_ids(self) -> int:
        """Micro-conditioning values: 6 (base: sizes and crop) or 5 (refiner: aesthetic score), as diffusers."""
        refiner = 5 * self.addition_time_embed_dim + self.cross_attention_dim
        return 5 if refiner == self.projection_class_embeddings_input_dim else 6

    @nn.compact
    def __call__(self, sample, timesteps, encoder_hidden_states, added_cond_kwargs=None, return_dict=False,
                 train: bool = False):
        self.check(train)
        t = jnp.broadcast_to(jnp.atleast_1d(jnp.asarray(timesteps)), (sample.shape[0],))
        temb = self.time_embedding(t, added_cond_kwargs)
        h = _conv(self.block_out_channels[0], self.dtype, "conv_in")(jnp.transpose(sample, (0, 2, 3, 1)))
        skips = (h,)
        for block in self.blocks(up=False):
            h, out = block(h, temb, encoder_hidden_states)
            skips += out
        if self.mid_block_type is not None:
            transformer = self.transformer_fields(len(self.block_out_channels) - 1)
            h = MidBlock(transformer, self.remat, self.dtype, name="mid_block")(h, temb, encoder_hidden_states)
        for block in self.blocks(up=True):
            n = self.layers_per_block + 1
            h, skips = block(h, temb, encoder_hidden_states, skips[-n:]), skips[:-n]
        h = nn.silu(_group_norm("conv_norm_out")(h))
        out = jnp.transpose(_conv(self.out_channels, self.dtype, "conv_out")(h), (0, 3, 1, 2))
        return (out,) if not return_dict else {"sample": out}

    def check(self, train: bool) -> None:
        """Raise on options this module does not implement (the loader's `check_unet_config` covers the rest)."""
        if self.num_attention_heads is not None:
            raise ValueError("SDXLUNet: num_attention_heads must be None (heads come from attention_head_dim, as "
                             "in diffusers' Flax UNet).")
        if self.addition_embed_type not in (None, "text_time"):
            raise ValueError(f"SDXLUNet: addition_embed_type={self.addition_embed_type!r}; use None or 'text_time'.")
        if self.mid_block_type not in (None, "UNetMidBlock2DCrossAttn"):
            raise ValueError(f"SDXLUNet: mid_block_type={self.mid_block_type!r}; use 'UNetMidBlock2DCrossAttn'.")
        kinds = {"CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"}
        bad = [k for k in (*self.down_block_types, *self.up_block_types) if k not in kinds]
        if bad:
            raise ValueError(f"SDXLUNet: unsupported block types {bad}; supported: {sorted(kinds)}.")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"SDXLUNet: remat={self.remat!r}; use one of {REMAT_POLICIES}.")
        if train and self.dropout > 0:
            raise NotImplementedError("SDXLUNet has no dropout: set dropout=0 or call with train=False.")

    def time_embedding(self, t, added_cond_kwargs):
        """Timestep embedding, plus the text_time embedding of (pooled text, sinusoids of the time_ids)."""
        c0 = self.block_out_channels[0]
        temb = TimestepMLP(4 * c0, self.dtype, name="time_embedding")(
            timestep_embedding(t, c0, self.flip_sin_to_cos, self.freq_shift))
        if self.addition_embed_type != "text_time":
            return temb
        missing = [k for k in ("text_embeds", "time_ids") if k not in (added_cond_kwargs or {})]
        if missing:
            raise ValueError(f"SDXLUNet with addition_embed_type='text_time' needs added_cond_kwargs {missing}.")
        text, ids = added_cond_kwargs["text_embeds"], added_cond_kwargs["time_ids"]
        ids_emb = timestep_embedding(jnp.ravel(ids), self.addition_time_embed_dim, self.flip_sin_to_cos,
                                     self.freq_shift).reshape(text.shape[0], -1)
        add = TimestepMLP(4 * c0, self.dtype, name="add_embedding")(jnp.concatenate([text, ids_emb], axis=-1))
        return temb + add

    def transformer_fields(self, level: int) -> dict:
        """Transformer2D fields at down-level `level` (up blocks index it from the bottom)."""
        n = len(self.block_out_channels)
        return dict(heads=_per_block(self.attention_head_dim, n)[level],
                    depth=_per_block(self.transformer_layers_per_block, n)[level],
                    use_linear_projection=self.use_linear_projection,
                    only_cross_attention=_per_block(self.only_cross_attention, n)[level],
                    scan_layers=self.scan_layers, remat=self.remat, exact_gelu=self.exact_gelu, dtype=self.dtype,
                    attention_core=self.attention_core)

    def blocks(self, up: bool) -> list[Block]:
        """The down (or up) blocks, named as diffusers' (down_blocks_i / up_blocks_i)."""
        n = len(self.block_out_channels)
        types = self.up_block_types if up else self.down_block_types
        out = []
        for i, kind in enumerate(types):
            level = n - 1 - i if up else i
            out.append(Block(self.block_out_channels[level], self.layers_per_block + int(up), up=up,
                             resample=i < n - 1, attention=kind.startswith("CrossAttn"),
                             transformer=self.transformer_fields(level), remat=self.remat, dtype=self.dtype,
                             name=f"{'up' if up else 'down'}_blocks_{i}"))
        return out

    @property
    def config(self) -> dict:
        """The diffusers UNet config keys this module was built from (for `weights.save_unet_pytorch`)."""
        ours = {"dtype", "scan_layers", "remat", "exact_gelu", "attention_core", "parent", "name"}
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in ours}


# ------------------------------------------------------------------------------------- stacked layers
def _layer_index(key: str) -> int | None:
    """i for a key 'transformer_blocks_<i>', else None."""
    prefix = _LAYERS + "_"
    return int(key[len(prefix):]) if key.startswith(prefix) and key[len(prefix):].isdigit() else None


def stack_layers(params) -> dict:
    """diffusers tree -> `scan_layers=True` tree: in every Transformer2D with more than one layer, the
    `transformer_blocks_<i>` subtrees become one `transformer_blocks` subtree with a leading layer axis."""
    if not hasattr(params, "items"):  # a leaf
        return params
    layers = sorted((i, k) for k in params if (i := _layer_index(k)) is not None)
    if len(layers) < 2:
        return {k: stack_layers(v) for k, v in params.items()}
    if [i for i, _ in layers] != list(range(len(layers))):
        raise ValueError(f"stack_layers: transformer layers {[k for _, k in layers]} are not numbered 0..n-1.")
    rest = {k: stack_layers(v) for k, v in params.items() if _layer_index(k) is None}
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs),
                                     *(params[k] for _, k in layers))
    return {**rest, _LAYERS: stacked}


def unstack_layers(params) -> dict:
    """Inverse of `stack_layers`: every `transformer_blocks` subtree -> `transformer_blocks_<i>` per layer."""
    if not hasattr(params, "items"):  # a leaf
        return params
    out = {k: unstack_layers(v) for k, v in params.items() if k != _LAYERS}
    if _LAYERS in params:
        depth = jax.tree_util.tree_leaves(params[_LAYERS])[0].shape[0]
        for i in range(depth):
            out[f"{_LAYERS}_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], params[_LAYERS])
    return out


def from_config(config: dict, dtype=None, **knobs) -> SDXLUNet:
    """An SDXLUNet from a diffusers UNet config dict (keys it does not use are ignored) and our knobs
    (`scan_layers`, `remat`, `exact_gelu`, `attention_core`)."""
    fields = set(SDXLUNet.__dataclass_fields__) - {"dtype", "parent", "name", "scan_layers", "remat", "exact_gelu",
                                                   "attention_core"}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    return SDXLUNet(**kwargs, dtype=dtype or jnp.float32, **knobs)
