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
noise) and predicts SiT's velocity x1 - x0. `denoiser_apply` adapts it to the project's RectifiedFlow convention
(t = 1 noise): t_sit = 1 - t and u = eps - x0 = -v_sit.
"""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax.traverse_util import flatten_dict, unflatten_dict

from amd_jax import paths, tensor_files
from amd_jax.errors import ConfigError, DamagedFileError
from amd_jax.models.common.embeddings import timestep_embedding
from amd_jax.models.sit.weights import (ARCH_FIELDS, CONFIG_FILE, SIZES, WEIGHTS_FILE, SiTConfig,  # noqa: F401
                                        check_state, expected_shapes, pos_embed_2d, size_config)

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


def denoiser_apply(cfg: SiTConfig):
    """apply_fn(params, x_t, t, cond, features=False) of `SiT(cfg)` for `amd_jax.models.common.denoiser.Denoiser` with
    the project's RectifiedFlow schedule and prediction_type 'velocity'; cond = {'label': int [B]}."""
    net = SiT(cfg)
    return rectified_flow_apply(
        lambda params, x, t_sit, cond, features: net.apply({"params": params}, x, t_sit, cond["label"], features))


def rectified_flow_apply(sit_fn):
    """A SiT-convention fn(params, x, t_sit, cond, features) -> SiT velocity (and features), as an apply_fn in the
    project's RectifiedFlow convention (t = 1 noise, t = 0 data, u = eps - x0).

    SiT's x_t = t_sit x1 + (1 - t_sit) x0 (x1 data, x0 noise) is the same point as RectifiedFlow's
    (1 - t) x0 + t eps when t_sit = 1 - t, and SiT's velocity x1 - x0 = data - noise = -u.
    """

    def apply_fn(params, x_t, t, cond, features=False):
        out = sit_fn(params, x_t, 1.0 - jnp.asarray(t, jnp.float32), cond, features)
        return (-out[0], out[1]) if features else -out

    return apply_fn


def pool_features(feats: jax.Array) -> jax.Array:
    """The token features of `features=True` [B, N, D] -> [B, D] float32 (mean over tokens), for a GAN head."""
    return jnp.mean(feats.astype(jnp.float32), axis=1)


def null_cond(cfg: SiTConfig):
    """cond -> the unconditional branch's cond {'label': num_classes [B]} (only the key the network reads)."""
    if not cfg.has_null_class:
        raise ConfigError(f"This SiT has no null class (class_dropout_prob={cfg.class_dropout_prob}): it cannot "
                          "be guided. Use a checkpoint trained with label dropout (class_dropout_prob > 0).")

    def fn(cond):
        return {"label": jnp.full_like(cond["label"], cfg.num_classes)}

    return fn


# ------------------------------------------------------------------------------------------ SiT names <-> Flax
def _flax_key(name: str) -> tuple[tuple[str, ...], str]:
    """SiT tensor name -> (Flax module path, leaf kind 'linear'|'conv'|'embed'|'bias')."""
    parts = name.split(".")
    leaf = parts.pop()
    path: list[str] = []
    for part in parts:
        if part.isdigit() and path and path[-1] == "blocks":
            path[-1] = f"blocks_{part}"
        elif part.isdigit() and path[-1] == "mlp":  # t_embedder.mlp.0 / .2
            path[-1] = f"mlp_{part}"
        elif part.isdigit():  # adaLN_modulation.1: the Linear after the SiLU
            continue
        else:
            path.append(part)
    if path == ["x_embedder", "proj"]:  # PatchEmbed's conv is the Flax module x_embedder itself
        return ("x_embedder",), "bias" if leaf == "bias" else "conv"
    return tuple(path), "bias" if leaf == "bias" else "embed" if path[-1] == "embedding_table" else "linear"


def params_from_state(state: dict[str, np.ndarray], cfg: SiTConfig, dtype=np.float32) -> dict:
    """SiT-named PyTorch-layout arrays (checked with `check_state`) -> the Flax parameter tree of `SiT(cfg)`.

    Linear (out, in) -> kernel (in, out); conv OIHW -> HWIO; embedding -> embedding; pos_embed is dropped (the
    model recomputes it, and check_state has compared the two)."""
    check_state(state, cfg, "SiT state dict")
    flat = {}
    for name, arr in state.items():
        if name == "pos_embed":
            continue
        path, kind = _flax_key(name)
        arr = np.asarray(arr)
        if kind == "conv":
            flat[path + ("kernel",)] = arr.transpose(2, 3, 1, 0)
        elif kind == "linear":
            flat[path + ("kernel",)] = arr.T
        elif kind == "embed":
            flat[path + ("embedding",)] = arr
        else:
            flat[path + ("bias",)] = arr
    return unflatten_dict({k: np.ascontiguousarray(v, dtype) for k, v in flat.items()})


def state_from_params(params: dict, cfg: SiTConfig) -> dict[str, np.ndarray]:
    """Inverse of `params_from_state`: the SiT-named float32 state dict (with the fixed pos_embed) of Flax params."""
    inverse = {(_flax_key(n)[0], _flax_key(n)[1]): n for n in expected_shapes(cfg) if n != "pos_embed"}
    state = {"pos_embed": pos_embed_2d(cfg.hidden_size, cfg.grid_size)[None]}
    for key, value in flatten_dict(dict(params)).items():
        leaf, arr = key[-1], np.asarray(value, np.float32)
        kind = "bias" if leaf == "bias" else "embed" if leaf == "embedding" else \
            "conv" if arr.ndim == 4 else "linear"
        name = inverse[(key[:-1], kind)]
        state[name] = arr.transpose(3, 2, 0, 1) if kind == "conv" else arr.T if kind == "linear" else arr
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


# --------------------------------------------------------------------------------------------------- loading
def load_sit(path: str, **overrides) -> tuple[SiTConfig, dict]:
    """(SiTConfig, float32 numpy Flax params) of a folder written by `python -m amd_jax.tools.convert_sit`
    (model.safetensors in SiT's names + config.json), local or gs://; torch-free. `overrides` set run-time fields
    (dtype='float32', attention_impl='cudnn', ...). Every tensor is checked (DamagedFileError names the bad ones)."""
    folder = epath.Path(paths.absolute(path))
    if not (folder / CONFIG_FILE).exists() or not (folder / WEIGHTS_FILE).exists():
        raise DamagedFileError(f"{folder} has no {CONFIG_FILE} + {WEIGHTS_FILE}: convert the PyTorch checkpoint "
                               f"first with `python -m amd_jax.tools.convert_sit --src=CKPT.pt --out={path}`.")
    arch = json.loads((folder / CONFIG_FILE).read_text())
    if set(arch) != {*ARCH_FIELDS, "architecture"}:
        raise DamagedFileError(f"{folder / CONFIG_FILE} has fields {sorted(arch)}, not SiT's {sorted(ARCH_FIELDS)}: "
                               "re-run amd_jax.tools.convert_sit on the PyTorch checkpoint.")
    cfg = SiTConfig(**{k: arch[k] for k in ARCH_FIELDS}, **overrides)
    state = tensor_files.read(folder / WEIGHTS_FILE)
    return cfg, params_from_state(state, cfg, jnp.dtype(cfg.param_dtype))
