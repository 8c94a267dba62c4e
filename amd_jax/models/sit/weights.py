"""SiT / DiT checkpoints: reading, checking and converting them, and loading a converted folder.

- `expected_shapes`: every tensor of a SiT checkpoint under SiT's original names (models.py, timm's Attention/Mlp).
- `checkpoint_state`, `from_diffusers`, `infer_arch`, `check_state`, `convert`: read a PyTorch checkpoint (bare
  state dict, or SiT train.py's {'model', 'ema', 'opt', 'args'}), accept diffusers' `DiTTransformer2DModel` naming, infer the
  config from tensor shapes and check every key, shape and the pos_embed (models/common/state_dict.py); a wrong
  checkpoint raises `DamagedFileError` naming the missing / unexpected / mis-shaped tensors.
- `params_from_state` / `state_from_params`: SiT's PyTorch names and layouts <-> the Flax tree of
  models/sit/network.py; `load_sit` reads the folder `python -m amd_jax.tools.convert_sit` writes (torch-free).
"""

from __future__ import annotations

import json
import re
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from etils import epath
from flax.traverse_util import flatten_dict, unflatten_dict

from amd_jax import paths, tensor_files
from amd_jax.errors import ConfigError, DamagedFileError
from amd_jax.models.common import state_dict
from amd_jax.models.sit.network import ARCH_FIELDS, SiTConfig, pos_embed_2d, size_config

WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"  # a converted folder (tools/convert_sit.py -> load_sit)
POS_EMBED_TOL = 1e-5  # |checkpoint pos_embed - sin-cos| allowed (float32 rounding of the float64 table)


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


_WORDING = state_dict.Wording(
    header="{what} does not match a SiT with {arch}:", missing="missing tensor: {name} {want}",
    unexpected="unexpected tensor: {name} {got}",
    footer="\nFix: pass the --size (or --num_heads) the checkpoint was trained with and a complete SiT/DiT state "
           "dict (models.py names, or diffusers' DiTTransformer2DModel names).")


def check_state(state: Mapping[str, np.ndarray], cfg: SiTConfig, what: str) -> None:
    """Raise DamagedFileError listing every missing, unexpected or mis-shaped tensor, and a pos_embed that is not
    SiT's fixed sin-cos table; returns quietly when `state` is exactly a `cfg` checkpoint."""
    want = expected_shapes(cfg)
    mismatch, extra = state_dict.compare(state, want), []
    if not mismatch:
        diff = float(np.max(np.abs(np.asarray(state["pos_embed"], np.float64)[0]
                                   - pos_embed_2d(cfg.hidden_size, cfg.grid_size))))
        if not diff <= POS_EMBED_TOL:
            extra.append(f"pos_embed differs from SiT's fixed 2-D sin-cos table by {diff:.3g} (> {POS_EMBED_TOL})")
    arch = ", ".join(f"{k}={v}" for k, v in cfg.arch().items())
    state_dict.raise_for(mismatch, state, want, _WORDING, error=DamagedFileError, extra=extra, what=what, arch=arch)


# --------------------------------------------------------------------------------------- reading checkpoints
def checkpoint_state(path: str) -> dict[str, np.ndarray]:
    """The float32 state dict of a SiT checkpoint: .safetensors, or a torch pickle (.pt/.pth, torch needed, loaded
    with weights_only=True) holding a bare state dict or SiT train.py's {'model', 'ema', 'opt', 'args'} (EMA
    preferred, as SiT's download.find_model). Its 'args' is the argparse.Namespace of train.py's command line: the
    one class beyond weights_only's tensors and containers that the load allows (torch.serialization.safe_globals);
    a pickle with any other class is refused."""
    if path.lower().endswith(".safetensors"):
        import safetensors.numpy

        return {k: np.asarray(v, np.float32) for k, v in safetensors.numpy.load_file(path).items()}
    import pickle

    from amd_jax.models.common.torch_weights import torch_to_numpy

    try:
        with _train_py_args_allowed():
            return torch_to_numpy(path, containers=("ema", "model", "state_dict"))
    except pickle.UnpicklingError as e:  # torch's weights_only=True refuses non-tensor objects
        raise DamagedFileError(
            f"{path} holds objects other than tensors (and SiT train.py's argparse.Namespace), which "
            f"torch.load(weights_only=True) refuses ({_unpickler_reason(e)}). Fix: save only its state dict, e.g. "
            "torch.save(torch.load(SRC, weights_only=False)['ema'], 'ema.pt') for a checkpoint you trust, and "
            "convert that.") from e


def _unpickler_reason(e: Exception) -> str:
    """The line of torch's weights_only refusal that names the refused class, e.g. 'Unsupported global: GLOBAL
    types.SimpleNamespace was not an allowed global by default.'; else its first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].split(" Please use", 1)[0].strip()
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def _train_py_args_allowed():
    """A context in which torch.load(weights_only=True) also accepts argparse.Namespace, the `args` SiT's (and
    DiT's) train.py saves beside the tensors, and nothing else; a no-op without torch (torch_to_numpy says so)."""
    import argparse
    import contextlib

    try:
        from torch.serialization import safe_globals
    except ImportError:
        return contextlib.nullcontext()
    return safe_globals([argparse.Namespace])


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
