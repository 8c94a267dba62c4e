"""Wan transformer weights: a diffusers `transformer/` folder <-> the Flax tree of models/wan/transformer.py,
torch-free (safetensors read as numpy).

The folder (local, or any etils.epath URL such as gs://; the model folder or its `transformer/` subfolder) holds
diffusers' `config.json` (`_class_name` WanTransformer3DModel) and `diffusion_pytorch_model.safetensors` (or a
sharded `.index.json`). `load_transformer` reads the config first (another class or an image-to-video option:
one ConfigError line), then checks every tensor name and shape against the model's abstract tree
(`jax.eval_shape`, nothing compiled or allocated) with models/common/state_dict.py: any missing, unexpected or
mis-shaped tensor raises one WeightError line naming them. `save_transformer` writes the same layout back
(a student exported for diffusers' `WanTransformer3DModel.from_pretrained`).

Names: the Flax modules carry diffusers' names with '.' -> '_' where diffusers nests containers (`to_out.0`,
`ffn.net.0.proj`, `condition_embedder.time_embedder.linear_1` ...); the blocks are one scanned subtree with a
leading layer axis, `blocks.<i>.*` in diffusers. Layouts: Linear (out, in) <-> kernel (in, out); Conv3d
(out, in, kt, kh, kw) <-> kernel (kt, kh, kw, in, out); norm `weight` <-> `scale`; scale_shift_table as is.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
from etils import epath
from flax.traverse_util import flatten_dict, unflatten_dict

from amd_jax import tensor_files
from amd_jax.models.common import state_dict
from amd_jax.models.common.dtypes import dtype as dtype_of
from amd_jax.models.common.hf_folders import WeightError, load_state_dict, local_folder, read_config
from amd_jax.models.wan.transformer import CLASS_NAME, UNSUPPORTED, WanConfig, abstract_params

SUBFOLDER = "transformer"
WEIGHTS_STEM = "diffusion_pytorch_model"
DIFFUSERS_VERSION = "0.39.0"
_IGNORED = ("norm_added_q",)  # diffusers' _keys_to_ignore_on_load_unexpected
# Flax module name -> diffusers' dotted path, where they differ.
_MODULES = {"time_embedder_linear_1": "time_embedder.linear_1", "time_embedder_linear_2": "time_embedder.linear_2",
            "text_embedder_linear_1": "text_embedder.linear_1", "text_embedder_linear_2": "text_embedder.linear_2",
            "to_out_0": "to_out.0", "net_0_proj": "net.0.proj", "net_2": "net.2"}
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "scale_shift_table": "scale_shift_table"}
_CONV_TO_TORCH, _CONV_TO_FLAX = (4, 3, 0, 1, 2), (2, 3, 4, 1, 0)

_WORDING = state_dict.Wording(
    header="{what} is not the WanTransformer3DModel its config.json describes ({count} problems): ",
    missing="missing {count} tensors {names}{more}", unexpected="unexpected {count} tensors {names}{more}",
    misshaped="{count} mis-shaped: {items}", item="{name} checkpoint {got} model {want}", groups=True, limit=4,
    footer=". Fix: point it at a complete Wan2.1 text-to-video transformer/ folder (diffusers layout).")


# ---------------------------------------------------------------------------------------------- names
def torch_name(key: tuple[str, ...]) -> str:
    """diffusers' name of the Flax parameter `key` (without the layer index of a scanned block)."""
    return ".".join([_MODULES.get(p, p) for p in key[:-1]] + [_LEAVES[key[-1]]])


def _to_torch(leaf: str, arr: np.ndarray) -> np.ndarray:
    if leaf != "kernel":
        return arr
    return arr.transpose(_CONV_TO_TORCH) if arr.ndim == 5 else arr.T


def _to_flax(leaf: str, arr: np.ndarray) -> np.ndarray:
    if leaf != "kernel":
        return arr
    return arr.transpose(_CONV_TO_FLAX) if arr.ndim == 5 else arr.T


def _torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if leaf != "kernel":
        return shape
    return tuple(shape[i] for i in _CONV_TO_TORCH) if len(shape) == 5 else shape[::-1]


def layout(abstract: Mapping) -> dict[str, tuple[tuple[str, ...], int | None, tuple[int, ...]]]:
    """{diffusers name: (Flax key, layer index or None, diffusers shape)} of every tensor of a parameter tree."""
    out = {}
    for key, leaf in flatten_dict(dict(abstract)).items():
        shape = tuple(leaf.shape)
        if key[0] == "blocks":
            for i in range(shape[0]):
                out[f"blocks.{i}.{torch_name(key[1:])}"] = (key, i, _torch_shape(key[-1], shape[1:]))
        else:
            out[torch_name(key)] = (key, None, _torch_shape(key[-1], shape))
    return out


# ------------------------------------------------------------------------------------------- convert
def params_from_state(state: Mapping[str, np.ndarray], cfg: WanConfig, what: str = "state dict") -> dict:
    """diffusers-named tensors -> the Flax tree of `WanTransformer(cfg)` in cfg.param_dtype (numpy), after checking
    every name and shape (one WeightError line listing the problems)."""
    names = layout(abstract_params(cfg))
    got = {k: v for k, v in state.items() if not k.startswith(_IGNORED) and ".norm_added_q." not in k}
    state_dict.check(got, {k: shape for k, (_, _, shape) in names.items()}, _WORDING, error=WeightError, what=what)
    dtype = np.dtype(dtype_of(cfg.param_dtype))
    stacks: dict[tuple[str, ...], list] = {}
    flat = {}
    for name, (key, index, _) in names.items():
        arr = _to_flax(key[-1], np.asarray(got[name], np.float32))
        if index is None:
            flat[key] = arr.astype(dtype)
        else:
            stacks.setdefault(key, [None] * cfg.num_layers)[index] = arr
    flat.update({key: np.stack(layers).astype(dtype) for key, layers in stacks.items()})
    return unflatten_dict({k: np.ascontiguousarray(v) for k, v in flat.items()})


def state_from_params(params: Mapping, dtype=np.float32) -> dict[str, np.ndarray]:
    """Inverse of `params_from_state`: diffusers-named, PyTorch-layout arrays of `dtype`."""
    out = {}
    for key, value in flatten_dict(dict(params)).items():
        arr = np.asarray(value, np.float32)
        layers = [(f"blocks.{i}.", arr[i]) for i in range(arr.shape[0])] if key[0] == "blocks" else [("", arr)]
        sub = key[1:] if key[0] == "blocks" else key
        for prefix, a in layers:
            out[prefix + torch_name(sub)] = np.ascontiguousarray(_to_torch(key[-1], a), dtype)
    return out


# --------------------------------------------------------------------------------------------- folders
def transformer_folder(path: str | os.PathLike) -> epath.Path:
    """The local folder holding config.json: `path` itself or its `transformer/` (gs:// is staged to a temp dir)."""
    root = epath.Path(local_folder(path, ("", SUBFOLDER)))
    for folder in (root, root / SUBFOLDER):
        if (folder / "config.json").exists():
            return folder
    raise FileNotFoundError(f"{os.fspath(path)} has no config.json nor {SUBFOLDER}/config.json: point it at a "
                            "diffusers Wan2.1 model folder or its transformer/ folder.")


def load_transformer(path: str | os.PathLike, variant: str | None = None, **run) -> tuple[WanConfig, dict]:
    """(WanConfig, Flax params as numpy) of a diffusers Wan transformer folder; `run` sets the run-time knobs
    (dtype, param_dtype, remat). Config and every tensor are checked before anything is compiled."""
    folder = transformer_folder(path)
    cfg = WanConfig.from_diffusers(read_config(folder, ""), what=f"{folder}/config.json", **run)
    state = load_state_dict(folder, WEIGHTS_STEM, variant)
    return cfg, params_from_state(state, cfg, what=os.fspath(folder))


def diffusers_config(cfg: WanConfig) -> dict[str, Any]:
    """config.json of `cfg` as diffusers writes it (the image-to-video fields null)."""
    arch = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.arch().items()}
    return {"_class_name": CLASS_NAME, "_diffusers_version": DIFFUSERS_VERSION, **arch, **UNSUPPORTED}


def save_transformer(out_dir: str | os.PathLike, params: Mapping, cfg: WanConfig, dtype=np.float32) -> epath.Path:
    """Write `out_dir/{config.json, diffusion_pytorch_model.safetensors}` (local or gs://), loadable by
    `WanTransformer3DModel.from_pretrained(out_dir)` and by `load_transformer`; returns the folder."""
    folder = epath.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {k: shape for k, (_, _, shape) in layout(abstract_params(cfg)).items()}
    state = state_from_params(params, dtype)
    state_dict.check(state, expected, _WORDING, error=WeightError, what="the params to export")
    tensor_files.write(folder / f"{WEIGHTS_STEM}.safetensors", state, metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(diffusers_config(cfg), indent=2, sort_keys=True))
    return folder
