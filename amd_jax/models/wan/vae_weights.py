"""Wan VAE weights: a diffusers `vae/` folder -> the Flax tree of models/wan/vae.py, torch-free (safetensors read
as numpy). Its own module beside weights.py (the transformer's), which it would push past ~250 lines.

The folder (local, or any etils.epath URL such as gs://; the model folder or its `vae/` subfolder) holds
diffusers' `config.json` (`_class_name` AutoencoderKLWan) and `diffusion_pytorch_model.safetensors`.
`load_vae` reads the config first (another class or a Wan2.2 option: one ConfigError line), then checks every
tensor name and shape against the model's abstract tree (`jax.eval_shape`, nothing compiled or allocated) with
models/common/state_dict.py: any missing, unexpected or mis-shaped tensor raises one WeightError line naming them.

Names: the Flax modules carry diffusers' names with '.' -> '_' in list containers (`down_blocks.3` ->
`down_blocks_3`, `resample.1` -> `resample_1` ...). Layouts: Conv3d (out, in, kt, kh, kw) <-> kernel
(kt, kh, kw, in, out); Conv2d (out, in, kh, kw) <-> kernel (kh, kw, in, out); RMS-norm `gamma` (C, 1, 1, 1), or
(C, 1, 1) in the attention blocks, <-> gamma (C,).
"""

from __future__ import annotations

import os
import re
from typing import Mapping

import numpy as np
from etils import epath
from flax.traverse_util import flatten_dict, unflatten_dict

from amd_jax.models.common import state_dict
from amd_jax.models.common.dtypes import dtype as dtype_of
from amd_jax.models.common.hf_folders import WeightError, load_state_dict, local_folder, read_config
from amd_jax.models.wan.vae import WanVAEConfig, abstract_params

SUBFOLDER = "vae"
WEIGHTS_STEM = "diffusion_pytorch_model"
_LISTS = re.compile(r"(down_blocks|up_blocks|resnets|attentions|upsamplers|resample)_(\d+)")
_TO_TORCH = {5: (4, 3, 0, 1, 2), 4: (3, 2, 0, 1)}  # Flax kernel axes -> PyTorch weight axes
_TO_FLAX = {5: (2, 3, 4, 1, 0), 4: (2, 3, 1, 0)}

_WORDING = state_dict.Wording(
    header="{what} is not the AutoencoderKLWan its config.json describes ({count} problems): ",
    missing="missing {count} tensors {names}{more}", unexpected="unexpected {count} tensors {names}{more}",
    misshaped="{count} mis-shaped: {items}", item="{name} checkpoint {got} model {want}", groups=True, limit=4,
    footer=". Fix: point it at a complete Wan2.1 vae/ folder (diffusers layout).")


def torch_name(key: tuple[str, ...]) -> str:
    """diffusers' name of the Flax parameter `key`."""
    parts = [_LISTS.sub(r"\1.\2", p) for p in key[:-1]]
    return ".".join(parts + ["weight" if key[-1] == "kernel" else key[-1]])


def _torch_shape(key: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    if key[-1] == "kernel":
        return tuple(shape[i] for i in _TO_TORCH[len(shape)])
    if key[-1] == "gamma":  # WanRMS_norm: (C, 1, 1) over images (attention), (C, 1, 1, 1) over videos
        return shape + ((1, 1) if any(p.startswith("attentions_") for p in key) else (1, 1, 1))
    return shape


def layout(abstract: Mapping) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """{diffusers name: (Flax key, diffusers shape)} of every tensor of a parameter tree."""
    return {torch_name(key): (key, _torch_shape(key, tuple(leaf.shape)))
            for key, leaf in flatten_dict(dict(abstract)).items()}


def params_from_state(state: Mapping[str, np.ndarray], cfg: WanVAEConfig, what: str = "state dict") -> dict:
    """diffusers-named tensors -> the Flax tree of `WanVAE(cfg)` in cfg.param_dtype (numpy), after checking every
    name and shape (one WeightError line listing the problems)."""
    names = layout(abstract_params(cfg))
    state_dict.check(state, {k: shape for k, (_, shape) in names.items()}, _WORDING, error=WeightError, what=what)
    dtype = np.dtype(dtype_of(cfg.param_dtype))
    flat = {}
    for name, (key, _) in names.items():
        arr = np.asarray(state[name], np.float32)
        if key[-1] == "kernel":
            arr = arr.transpose(_TO_FLAX[arr.ndim])
        elif key[-1] == "gamma":
            arr = arr.reshape(-1)
        flat[key] = np.ascontiguousarray(arr, dtype)
    return unflatten_dict(flat)


def vae_folder(path: str | os.PathLike) -> epath.Path:
    """The local folder holding config.json: `path` itself or its `vae/` (gs:// is staged to a temp dir)."""
    root = epath.Path(local_folder(path, ("", SUBFOLDER)))
    for folder in (root, root / SUBFOLDER):
        if (folder / "config.json").exists():
            return folder
    raise FileNotFoundError(f"{os.fspath(path)} has no config.json nor {SUBFOLDER}/config.json: point it at a "
                            "diffusers Wan2.1 model folder or its vae/ folder.")


def load_vae(path: str | os.PathLike, variant: str | None = None, **run) -> tuple[WanVAEConfig, dict]:
    """(WanVAEConfig, Flax params as numpy) of a diffusers Wan VAE folder; `run` sets dtype / param_dtype.
    Config and every tensor are checked before anything is compiled."""
    folder = vae_folder(path)
    cfg = WanVAEConfig.from_diffusers(read_config(folder, ""), what=f"{folder}/config.json", **run)
    state = load_state_dict(folder, WEIGHTS_STEM, variant)
    return cfg, params_from_state(state, cfg, what=os.fspath(folder))
