"""SiT / DiT transformer denoiser in Flax linen, exactly as SiT's (and DiT's) models.py, NHWC.

    x [B, H, W, C] --PatchEmbed (conv p x p, stride p)--> tokens [B, N, D] + fixed 2-D sin-cos pos_embed
    c = TimestepEmbedder(t) + LabelEmbedder(y)            (256 sinusoid frequencies, cos then sin, MLP with SiLU)
    depth x adaLN-Zero block                               (6 modulation chunks, LayerNorm eps 1e-6 without affine,
                                                            qkv attention with bias, tanh-GELU MLP)
    final layer: adaLN (shift, scale) + Linear -> p*p*out_channels, unpatchify in SiT's (h, w, p, q, c) order.

Precision: parameters in `param_dtype` (float32), matmuls / attention in `dtype` (bfloat16 by default), as PyTorch
autocast runs SiT: the residual stream, LayerNorm statistics, the modulation and the attention softmax stay in
float32 (`jax.nn.dot_product_attention` always takes its softmax in float32); outputs are float32.

learn_sigma: the final linear keeps all 2 * in_channels outputs of the released checkpoints (so conversions are
lossless), and the forward returns the first in_channels, SiT's velocity (its `x.chunk(2, dim=1)[0]`).

`features=True` also returns the token features after the LAST block (before the final layer), [B, N, D] float32,
for DMD2's GAN head. The model never drops labels itself: the caller passes label == num_classes (the null class)
for the unconditional branch and for classifier-free-guidance training dropout.

Time: the network sees SiT's float t_sit in [0, 1] with t_sit = 1 meaning data (x_t = t x1 + (1 - t) x0, x0 =
noise) and predicts SiT's velocity x1 - x0. models/sit/denoiser.py adapts it to the project's RectifiedFlow
convention (t = 1 noise): t_sit = 1 - t and u = eps - x0 = -v_sit; models/sit/weights.py reads and converts
checkpoints.

The architecture: `SiTConfig`, `SIZES` / `size_config` (SiT's presets) and `pos_embed_2d`, the fixed 2-D sin-cos
position embedding (MAE's code, as SiT/DiT) that the model recomputes and the converter compares with a
checkpoint's `pos_embed`.
"""

from __future__ import annotations

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from amd_jax.errors import ConfigError
from amd_jax.models.common.dtypes import DTYPES as COMMON_DTYPES
from amd_jax.models.common.embeddings import timestep_embedding

# (depth, hidden_size, num_heads) of SiT's presets; the patch size follows the '/' (SiT-XL/2 = 'XL/2').
_WIDTHS = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
ARCH_FIELDS = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "mlp_ratio",
               "num_classes", "class_dropout_prob", "learn_sigma")
DTYPES = tuple(COMMON_DTYPES)  # the names amd_jax/models/common/dtypes.py knows
ATTENTION_IMPLS = (None, "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class SiTConfig:
    """A SiT / DiT backbone (SiT's models.py arguments) plus compute knobs.

    input_size: latent side (32 for 256x256 images through the SD-VAE); NHWC inputs [B, input_size, input_size,
    in_channels]. learn_sigma: the final layer has 2 * in_channels outputs (as the released checkpoints) of which the
    forward keeps the first in_channels (the velocity). class_dropout_prob > 0 adds the null class (index
    num_classes) to the label table. dtype: matmul / attention compute dtype; param_dtype: storage of parameters.
    attention_impl: `jax.nn.dot_product_attention`'s implementation (None = XLA picks, 'xla', 'cudnn').
    """

    input_size: int
    patch_size: int
    in_channels: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    attention_impl: str | None = None

    def __post_init__(self):
        problems = []
        if self.hidden_size % self.num_heads:
            problems.append(f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        if self.hidden_size % 4:
            problems.append(f"hidden_size={self.hidden_size} must be a multiple of 4 (2-D sin-cos embedding)")
        if self.input_size % self.patch_size:
            problems.append(f"input_size={self.input_size} is not a multiple of patch_size={self.patch_size}")
        if self.dtype not in DTYPES or self.param_dtype not in DTYPES:
            problems.append(f"dtype={self.dtype!r} / param_dtype={self.param_dtype!r}: use one of {DTYPES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            problems.append(f"attention_impl={self.attention_impl!r}: use one of {ATTENTION_IMPLS}")
        if problems:
            raise ConfigError("SiTConfig: " + "; ".join(problems) + ".")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def has_null_class(self) -> bool:
        return self.class_dropout_prob > 0

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    def arch(self) -> dict:
        """The architecture fields (what config.json stores; dtype and attention_impl are run-time choices)."""
        return {k: getattr(self, k) for k in ARCH_FIELDS}


def size_config(name: str) -> dict:
    """{'depth', 'hidden_size', 'num_heads', 'patch_size'} of a preset 'S/2', 'B/4', 'XL/2', ... (any patch size)."""
    m = re.fullmatch(r"(?:SiT-|DiT-)?(S|B|L|XL)/(\d+)", name.strip())
    if not m:
        raise ConfigError(f"Unknown SiT size {name!r}: use S/p, B/p, L/p or XL/p with a patch size p, e.g. XL/2.")
    depth, hidden, heads = _WIDTHS[m.group(1)]
    return {"depth": depth, "hidden_size": hidden, "num_heads": heads, "patch_size": int(m.group(2))}


SIZES: dict[str, dict] = {f"{k}/2": size_config(f"{k}/2") for k in _WIDTHS}


def pos_embed_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """[grid_size**2, embed_dim] float32: SiT's get_2d_sincos_pos_embed (MAE), rows in (h, w) raster order.

    As the original: np.meshgrid(w, h) puts the w coordinate first, the first half of the channels encodes it and
    the second half the h coordinate; each half is [sin, cos] of pos * 10000**(-2k/(embed_dim/2)), in float64.
    """
    grid = np.stack(np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32)))
    halves = [_sincos_1d(embed_dim // 2, g.reshape(-1)) for g in grid]
    return np.concatenate(halves, axis=1).astype(np.float32)


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos, omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


# ------------------------------------------------------------------------------------------------------ network
LN_EPS = 1e-6
FREQ_DIM = 256  # TimestepEmbedder.frequency_embedding_size

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros
_normal02 = nn.initializers.normal(0.02)
# SiT initialises the patch conv "like nn.Linear": xavier on the [D, C*p*p] view (fan_in C*p*p, fan_out D).
_patch_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3)


def layer_norm(x: jax.Array) -> jax.Array:
    """LayerNorm without affine (eps 1e-6), statistics and result in float32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LN_EPS)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1 + scale[:, None]) + shift[:, None]


def _dense(cfg: SiTConfig, features: int, name: str, kernel_init=_xavier) -> nn.Dense:
    return nn.Dense(features, dtype=cfg.dtype, param_dtype=cfg.param_dtype, kernel_init=kernel_init,
                    bias_init=_zeros, name=name)


def _adaln(cfg: SiTConfig, c: jax.Array, chunks: int) -> list[jax.Array]:
    """SiLU -> zero-initialised Linear(D, chunks * D) -> `chunks` float32 [B, D] pieces (SiT's chunk order)."""
    mod = _dense(cfg, chunks * cfg.hidden_size, "adaLN_modulation", kernel_init=_zeros)(nn.silu(c))
    return jnp.split(mod.astype(jnp.float32), chunks, axis=-1)


class Attention(nn.Module):
    """timm's Attention (qkv_bias=True, no q/k norm) through `jax.nn.dot_product_attention`."""

    cfg: SiTConfig

    @nn.compact
    def __call__(self, x):
        cfg, (b, n, d) = self.cfg, x.shape
        qkv = _dense(cfg, 3 * d, "qkv")(x).reshape(b, n, 3, cfg.num_heads, d // cfg.num_heads)
        out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], implementation=cfg.attention_impl)
        return _dense(cfg, d, "proj")(out.reshape(b, n, d))


class Mlp(nn.Module):
    """timm's Mlp: fc1 -> tanh-approximate GELU -> fc2."""

    cfg: SiTConfig

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(_dense(self.cfg, self.cfg.mlp_hidden, "fc1")(x), approximate=True)
        return _dense(self.cfg, self.cfg.hidden_size, "fc2")(h)


class SiTBlock(nn.Module):
    """adaLN-Zero block: x += gate_msa * attn(mod(LN(x))); x += gate_mlp * mlp(mod(LN(x))); x stays float32."""

    cfg: SiTConfig

    @nn.compact
    def __call__(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _adaln(self.cfg, c, 6)
        h = modulate(layer_norm(x), shift_msa, scale_msa)
        x = x + gate_msa[:, None] * Attention(self.cfg, name="attn")(h).astype(jnp.float32)
        h = modulate(layer_norm(x), shift_mlp, scale_mlp)
        return x + gate_mlp[:, None] * Mlp(self.cfg, name="mlp")(h).astype(jnp.float32)


class FinalLayer(nn.Module):
    cfg: SiTConfig

    @nn.compact
    def __call__(self, x, c):
        shift, scale = _adaln(self.cfg, c, 2)
        p = self.cfg.patch_size
        out = _dense(self.cfg, p * p * self.cfg.out_channels, "linear", kernel_init=_zeros)
        return out(modulate(layer_norm(x), shift, scale)).astype(jnp.float32)


class TimestepEmbedder(nn.Module):
    cfg: SiTConfig

    @nn.compact
    def __call__(self, t):
        d = self.cfg.hidden_size
        h = _dense(self.cfg, d, "mlp_0", kernel_init=_normal02)(timestep_embedding(t, FREQ_DIM))
        return _dense(self.cfg, d, "mlp_2", kernel_init=_normal02)(nn.silu(h)).astype(jnp.float32)


class LabelEmbedder(nn.Module):
    """Label table with num_classes + 1 rows (the last one the null class) when class_dropout_prob > 0."""

    cfg: SiTConfig

    @nn.compact
    def __call__(self, labels):
        rows = self.cfg.num_classes + int(self.cfg.has_null_class)
        table = nn.Embed(rows, self.cfg.hidden_size, param_dtype=self.cfg.param_dtype, embedding_init=_normal02,
                         name="embedding_table")
        return table(jnp.asarray(labels, jnp.int32)).astype(jnp.float32)


class SiT(nn.Module):
    """(x [B, H, W, C] NHWC, t_sit [B] or scalar, labels int [B]) -> SiT velocity [B, H, W, C] float32
    (and with features=True the last block's tokens [B, N, D] float32)."""

    cfg: SiTConfig

    @nn.compact
    def __call__(self, x, t_sit, labels, features: bool = False):
        cfg, batch = self.cfg, x.shape[0]
        if x.shape[1:] != (cfg.input_size, cfg.input_size, cfg.in_channels):
            raise ValueError(f"SiT expects NHWC x [B, {cfg.input_size}, {cfg.input_size}, {cfg.in_channels}], "
                             f"got {x.shape}.")
        p = cfg.patch_size
        tokens = nn.Conv(cfg.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=cfg.dtype,
                         param_dtype=cfg.param_dtype, kernel_init=_patch_init, bias_init=_zeros,
                         name="x_embedder")(x.astype(cfg.dtype))
        h = tokens.reshape(batch, cfg.num_patches, cfg.hidden_size).astype(jnp.float32)
        h = h + jnp.asarray(pos_embed_2d(cfg.hidden_size, cfg.grid_size))[None]
        t = jnp.broadcast_to(jnp.asarray(t_sit, jnp.float32), (batch,))
        c = TimestepEmbedder(cfg, name="t_embedder")(t) + LabelEmbedder(cfg, name="y_embedder")(labels)
        for i in range(cfg.depth):
            h = SiTBlock(cfg, name=f"blocks_{i}")(h, c)
        out = unpatchify(FinalLayer(cfg, name="final_layer")(h, c), cfg)[..., :cfg.in_channels]
        return (out, h) if features else out


def unpatchify(x: jax.Array, cfg: SiTConfig) -> jax.Array:
    """[B, N, p*p*c] tokens -> NHWC [B, h*p, w*p, c]; each token's vector is laid out (p, q, c) as in SiT."""
    b, g, p, c = x.shape[0], cfg.grid_size, cfg.patch_size, cfg.out_channels
    x = x.reshape(b, g, g, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, g * p, g * p, c)


# ------------------------------------------------------------------------------------------ params and apply
def _dummy_inputs(cfg: SiTConfig):
    return (jnp.zeros((1, cfg.input_size, cfg.input_size, cfg.in_channels), jnp.float32),
            jnp.zeros((1,), jnp.float32), jnp.zeros((1,), jnp.int32))


def init_params(cfg: SiTConfig, rng: jax.Array) -> dict:
    """Fresh parameters as SiT's initialize_weights: xavier-uniform linears (and patch conv as a linear), zero
    biases, normal(0.02) label table and t-MLP, zero adaLN modulations and final layer -> the model outputs 0."""
    return SiT(cfg).init(rng, *_dummy_inputs(cfg))["params"]


def abstract_params(cfg: SiTConfig) -> dict:
    """The parameter tree as ShapeDtypeStructs (nothing allocated)."""
    return jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))


def param_count(cfg: SiTConfig, include_pos_embed: bool = False) -> int:
    """Number of parameters. PyTorch's SiT also counts its frozen pos_embed Parameter (include_pos_embed=True gives
    the figure SiT/DiT report, e.g. 675,129,632 for XL/2 at 256x256)."""
    n = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(abstract_params(cfg)))
    return n + (cfg.num_patches * cfg.hidden_size if include_pos_embed else 0)
