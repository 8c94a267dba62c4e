"""SiT / DiT architecture configs and checkpoints, in numpy only (no jax, no flax: the converter runs beside torch).

- `SiTConfig`, `SIZES`, `size_config`: the architecture of SiT's (and DiT's) models.py and its presets.
- `pos_embed_2d`: the fixed 2-D sin-cos position embedding (MAE's code, as SiT/DiT), which the Flax model recomputes
  and the converter compares with a checkpoint's `pos_embed`.
- `expected_shapes`: every tensor of a SiT checkpoint under SiT's original names (models.py, timm's Attention/Mlp).
- `checkpoint_state`, `from_diffusers`, `infer_arch`, `check_state`: read a PyTorch checkpoint (bare state dict,
  or SiT train.py's {'ema', 'model', ...}), accept diffusers' `DiTTransformer2DModel` naming, infer the config from
  tensor shapes and check every key, shape and the pos_embed; a wrong checkpoint raises `DamagedFileError` naming
  the missing / unexpected / mis-shaped tensors.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Mapping

import numpy as np

from amd_jax.errors import ConfigError, DamagedFileError

# (depth, hidden_size, num_heads) of SiT's presets; the patch size follows the '/' (SiT-XL/2 = 'XL/2').
_WIDTHS = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
ARCH_FIELDS = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "mlp_ratio",
               "num_classes", "class_dropout_prob", "learn_sigma")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = (None, "xla", "cudnn")
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"  # a converted folder (tools/convert_sit.py -> load_sit)
POS_EMBED_TOL = 1e-5  # |checkpoint pos_embed - sin-cos| allowed (float32 rounding of the float64 table)


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


# --------------------------------------------------------------------------------------------- checkpoint layout
def expected_shapes(cfg: SiTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a SiT / DiT PyTorch state dict (SiT's names and PyTorch layouts) for `cfg`."""
    d, p, c, out = cfg.hidden_size, cfg.patch_size, cfg.in_channels, cfg.patch_size**2 * cfg.out_channels
    shapes = {
        "pos_embed": (1, cfg.num_patches, d),
        "x_embedder.proj.weight": (d, c, p, p), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (cfg.num_classes + int(cfg.has_null_class), d),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
        "final_layer.linear.weight": (out, d), "final_layer.linear.bias": (out,),
    }
    block = {"adaLN_modulation.1": (6 * d, d), "attn.qkv": (3 * d, d), "attn.proj": (d, d),
             "mlp.fc1": (cfg.mlp_hidden, d), "mlp.fc2": (d, cfg.mlp_hidden)}
    for i in range(cfg.depth):
        for name, (rows, cols) in block.items():
            shapes[f"blocks.{i}.{name}.weight"] = (rows, cols)
            shapes[f"blocks.{i}.{name}.bias"] = (rows,)
    return shapes


def infer_arch(state: Mapping[str, np.ndarray], num_heads: int) -> dict:
    """The SiTConfig fields of a SiT-named state dict: all from tensor shapes except `num_heads` (no shape shows
    it). The label table is taken to hold the null class (class_dropout_prob > 0, as SiT's released
    class-conditional models), so num_classes = table rows - 1."""
    need = ["x_embedder.proj.weight", "y_embedder.embedding_table.weight", "final_layer.linear.weight", "pos_embed"]
    missing = [k for k in need if k not in state]
    if missing:
        raise DamagedFileError(f"Not a SiT/DiT checkpoint: no {missing}. Give SiT's models.py state dict (or "
                               "diffusers' DiTTransformer2DModel weights).")
    hidden, in_ch, patch, _ = state["x_embedder.proj.weight"].shape
    out_ch = state["final_layer.linear.weight"].shape[0] // (patch * patch)
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    return dict(
        input_size=int(round(state["pos_embed"].shape[1] ** 0.5)) * patch, patch_size=patch, in_channels=in_ch,
        hidden_size=hidden, depth=len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
        num_heads=num_heads, mlp_ratio=fc1.shape[0] / hidden if fc1 is not None else 4.0,
        num_classes=state["y_embedder.embedding_table.weight"].shape[0] - 1, learn_sigma=out_ch == 2 * in_ch)


def check_state(state: Mapping[str, np.ndarray], cfg: SiTConfig, what: str) -> None:
    """Raise DamagedFileError listing every missing, unexpected or mis-shaped tensor, and a pos_embed that is not
    SiT's fixed sin-cos table; returns quietly when `state` is exactly a `cfg` checkpoint."""
    want = expected_shapes(cfg)
    lines = [f"  missing tensor: {k} {want[k]}" for k in want if k not in state]
    lines += [f"  unexpected tensor: {k} {tuple(v.shape)}" for k, v in state.items() if k not in want]
    lines += [f"  shape mismatch: {k}: checkpoint {tuple(state[k].shape)}, model {want[k]}"
              for k in want if k in state and tuple(state[k].shape) != want[k]]
    if not lines:
        diff = float(np.max(np.abs(np.asarray(state["pos_embed"], np.float64)[0]
                                   - pos_embed_2d(cfg.hidden_size, cfg.grid_size))))
        if not diff <= POS_EMBED_TOL:
            lines.append(f"  pos_embed differs from SiT's fixed 2-D sin-cos table by {diff:.3g} (> {POS_EMBED_TOL})")
    if lines:
        arch = ", ".join(f"{k}={v}" for k, v in cfg.arch().items())
        raise DamagedFileError(
            f"{what} does not match a SiT with {arch}:\n" + "\n".join(lines) + "\nFix: pass the --size (or "
            "--num_heads) the checkpoint was trained with and a complete SiT/DiT state dict (models.py names, or "
            "diffusers' DiTTransformer2DModel names).")


# --------------------------------------------------------------------------------------- reading checkpoints
def checkpoint_state(path: str) -> dict[str, np.ndarray]:
    """The float32 state dict of a SiT checkpoint: .safetensors, or a torch pickle (.pt/.pth, torch needed, loaded
    with weights_only=True) holding a bare state dict or SiT train.py's {'ema', 'model', ...} (EMA preferred, as
    SiT's download.find_model)."""
    if path.lower().endswith(".safetensors"):
        import safetensors.numpy

        return {k: np.asarray(v, np.float32) for k, v in safetensors.numpy.load_file(path).items()}
    import pickle

    from amd_jax.models.common.torch_weights import torch_to_numpy

    try:
        return torch_to_numpy(path, containers=("ema", "model", "state_dict"))
    except pickle.UnpicklingError as e:  # torch's weights_only=True refuses non-tensor objects
        raise DamagedFileError(
            f"{path} holds objects other than tensors, which torch.load(weights_only=True) refuses "
            f"({str(e).splitlines()[0]}). Fix: save "
            "only its state dict, e.g. torch.save(torch.load(SRC, weights_only=False)['ema'], 'ema.pt') for a "
            "checkpoint you trust, and convert that.") from e


# diffusers' DiTTransformer2DModel -> SiT names (its blocks each carry a copy of the t / label embedders).
_DIFFUSERS_BLOCK = {"norm1.linear": "adaLN_modulation.1", "attn1.to_out.0": "attn.proj",
                    "ff.net.0.proj": "mlp.fc1", "ff.net.2": "mlp.fc2"}
_DIFFUSERS_TOP = {"pos_embed.proj": "x_embedder.proj", "proj_out_1": "final_layer.adaLN_modulation.1",
                  "proj_out_2": "final_layer.linear"}
_DIFFUSERS_EMB = {"timestep_embedder.linear_1": "t_embedder.mlp.0", "timestep_embedder.linear_2": "t_embedder.mlp.2",
                  "class_embedder.embedding_table": "y_embedder.embedding_table"}


def is_diffusers(state: Mapping[str, np.ndarray]) -> bool:
    return any(k.startswith("transformer_blocks.") for k in state)


def from_diffusers(state: Mapping[str, np.ndarray], input_size: int | None) -> dict[str, np.ndarray]:
    """diffusers DiTTransformer2DModel tensors renamed to SiT's (to_q/to_k/to_v fused into qkv, the per-block
    embedder copies checked equal and kept once). Names it does not know are kept, so `check_state` reports them.
    diffusers keeps its sin-cos table as a non-persistent buffer, so `input_size` (its config's sample_size) is
    needed to add SiT's `pos_embed`.

    diffusers' DiT sinusoid uses downscale_freq_shift=1 (frequencies exp(-ln(1e4) k / (half - 1))) where DiT/SiT use
    k / half: the weights are the same, only diffusers' forward differs slightly.
    """
    out, copies, qkv = {}, {}, {}
    for name, arr in state.items():
        m = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)\.(weight|bias)", name)
        emb = re.fullmatch(r"transformer_blocks\.(\d+)\.norm1\.emb\.(.+)\.(weight|bias)", name)
        top = re.fullmatch(r"(.+)\.(weight|bias)", name)
        if emb and emb.group(2) in _DIFFUSERS_EMB:
            copies.setdefault(f"{_DIFFUSERS_EMB[emb.group(2)]}.{emb.group(3)}", []).append((name, arr))
        elif m and m.group(2) in ("attn1.to_q", "attn1.to_k", "attn1.to_v"):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)[-1]] = arr
        elif m and m.group(2) in _DIFFUSERS_BLOCK:
            out[f"blocks.{m.group(1)}.{_DIFFUSERS_BLOCK[m.group(2)]}.{m.group(3)}"] = arr
        elif name == "pos_embed.pos_embed":
            out["pos_embed"] = arr
        elif top and top.group(1) in _DIFFUSERS_TOP:
            out[f"{_DIFFUSERS_TOP[top.group(1)]}.{top.group(2)}"] = arr
        else:
            out[name] = arr
    for (i, leaf), parts in qkv.items():
        if sorted(parts) != ["k", "q", "v"]:
            raise DamagedFileError(f"diffusers block {i}: attn1 {leaf} has only {sorted(parts)} of to_q/to_k/to_v.")
        out[f"blocks.{i}.attn.qkv.{leaf}"] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    for key, found in copies.items():
        differ = [n for n, a in found[1:] if not np.array_equal(a, found[0][1])]
        if differ:
            raise DamagedFileError(f"diffusers DiT: {differ} differ from {found[0][0]}; SiT shares one embedder "
                                   "across blocks, so this checkpoint is not a SiT/DiT.")
        out[key] = found[0][1]
    if "pos_embed" not in out and "x_embedder.proj.weight" in out:
        if input_size is None:
            raise ConfigError("diffusers' DiT does not store its position table: give --input_size (its config's "
                              "sample_size, e.g. 32 for 256x256 images).")
        hidden, _, patch, _ = out["x_embedder.proj.weight"].shape
        out["pos_embed"] = pos_embed_2d(hidden, input_size // patch)[None]
    return out


def convert(state: Mapping[str, np.ndarray], num_heads: int, what: str, size: str | None = None,
            input_size: int | None = None) -> tuple[dict[str, np.ndarray], SiTConfig]:
    """(SiT-named float32 state, config) of a SiT or diffusers-DiT state dict, fully checked (`check_state`).

    With `size` ('XL/2', ...) the preset's depth / width / heads / patch must match the checkpoint's, and with
    `input_size` the latent size (required for diffusers weights, which do not store it).
    """
    sit = from_diffusers(state, input_size) if is_diffusers(state) else dict(state)
    arch = infer_arch(sit, num_heads)
    if size is not None or input_size is not None:
        preset = {**(size_config(size) if size else {}), **({"input_size": input_size} if input_size else {})}
        wrong = {k: (v, arch[k]) for k, v in preset.items() if arch[k] != v}
        if wrong:
            raise DamagedFileError(f"{what} does not match the flags: " + ", ".join(
                f"{k} {have} in the checkpoint, {want} asked" for k, (want, have) in wrong.items())
                + ". Fix: pass the --size / --input_size the checkpoint was trained with.")
    cfg = SiTConfig(**arch)
    check_state(sit, cfg, what)
    return {k: np.ascontiguousarray(v, np.float32) for k, v in sit.items()}, cfg


def config_json(cfg: SiTConfig) -> str:
    return json.dumps({"architecture": "SiT", **cfg.arch()}, indent=2, sort_keys=True)
