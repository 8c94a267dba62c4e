"""Diffusers / transformers model folders <-> Flax params, without torch: the part every family shares (the SDXL
UNet and text encoders in models/sdxl/weights.py, the VAE in models/vae/weights.py).

A folder (local path or any etils.epath URL such as gs://...) holds diffusers' layout, one subfolder a component:

    unet/config.json            unet/diffusion_pytorch_model[.fp16].safetensors  (or a sharded *.index.json)
    vae/config.json             vae/diffusion_pytorch_model[.fp16].safetensors
    text_encoder/config.json    text_encoder/model[.fp16].safetensors             (CLIP ViT-L text tower)
    text_encoder_2/config.json  text_encoder_2/model[.fp16].safetensors           (OpenCLIP bigG, with projection)
    tokenizer/, tokenizer_2/    vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json

(subfolder '' is the folder itself, e.g. a bare AutoencoderKL folder). Weights are read with `amd_jax.tensor_files`
(safetensors), renamed with diffusers' / transformers' own PyTorch->Flax rules and checked against the Flax
model's abstract parameter tree (`jax.eval_shape`, nothing is initialised) by models/common/state_dict.py: any
missing, unexpected or mis-shaped tensor raises `WeightError` naming it. Params come back as host numpy trees in
the requested dtype (place them on devices with your own sharding). `flax_to_pytorch_name` is the inverse rule
(Flax key -> PyTorch name and layout), for exports and error messages.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from amd_jax import tensor_files
from amd_jax.errors import DamagedFileError
from amd_jax.models.common import state_dict

FlatKey = tuple[str, ...]
WEIGHT_STEMS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
                "text_encoder": "model", "text_encoder_2": "model"}
ALL_SUBFOLDERS = (*WEIGHT_STEMS, "tokenizer", "tokenizer_2")
_IGNORED_SUFFIXES = ("position_ids",)  # non-persistent buffers some older CLIP checkpoints still contain


class WeightError(DamagedFileError):
    """A checkpoint does not match the model: lists every missing, unexpected or mis-shaped tensor by name (a
    ValueError, and a DamagedFileError: the entry points print it in one line)."""


# ----------------------------------------------------------------------------------------------- files
def local_folder(path: str | os.PathLike, subfolders: tuple[str, ...] = ALL_SUBFOLDERS) -> pathlib.Path:
    """A local directory for `path`: itself if local, else a temp copy of the listed subfolders (gs://...).

    Staged copies are left in the system temp dir (the caller may delete them once the params are loaded).
    """
    s = os.fspath(path)
    if "://" not in s or s.startswith("file://"):
        p = pathlib.Path(s.removeprefix("file://"))
        if not p.is_dir():
            raise FileNotFoundError(f"Model folder {s!r} does not exist or is not a directory.")
        return p
    from etils import epath

    return stage(epath.Path(s), subfolders)


def stage(src, subfolders: tuple[str, ...]) -> pathlib.Path:
    """Copy the files (not sub-directories) of `src/<sub>` for each existing subfolder to a local temp dir."""
    if not src.exists():
        raise FileNotFoundError(f"Model folder {os.fspath(src)!r} does not exist.")
    dst = pathlib.Path(tempfile.mkdtemp(prefix="model_stage_"))
    for sub in subfolders:
        if not (src / sub).exists():
            continue
        (dst / sub).mkdir(exist_ok=True)  # sub '' = the folder itself
        for f in (src / sub).iterdir():
            if f.is_dir():
                continue
            with f.open("rb") as fin, open(dst / sub / f.name, "wb") as fout:
                shutil.copyfileobj(fin, fout, length=64 << 20)
    return dst


def read_config(folder: str | os.PathLike, subfolder: str) -> dict[str, Any]:
    """The subfolder's config.json as a dict."""
    f = pathlib.Path(folder) / subfolder / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"Missing config file {f}.")
    return json.loads(f.read_text())


def weight_files(folder: pathlib.Path, stem: str, variant: str | None = None) -> list[pathlib.Path]:
    """The safetensors file(s) of one component: `<stem>[.<variant>].safetensors` or its sharded index."""
    names = ([f"{stem}.{variant}.safetensors"] if variant else []) + [f"{stem}.safetensors"]
    for name in names:
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            # by name, not by resolving links: the Hugging Face cache's files are links into its blobs/ folder
            outside = [s for s in shards if os.path.isabs(s) or os.path.normpath(s).split(os.sep)[0] == ".."]
            if outside:  # '../x' or '/x': the index may only name files of its own folder
                raise WeightError(f"{index} lists shard(s) outside its folder {folder}: {outside[:3]}. A sharded "
                                  f"index names files of its own folder; fix the index or the folder.")
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise FileNotFoundError(f"{index} lists shard(s) that do not exist: {missing}.")
            return [folder / s for s in shards]
    bins = sorted(p.name for p in folder.glob("*.bin")) if folder.is_dir() else []
    hint = f" Found only {bins}: convert them to safetensors (reading .bin needs torch)." if bins else ""
    raise FileNotFoundError(f"No weights in {folder}: looked for {names} (or their .index.json).{hint}")


def load_state_dict(folder: pathlib.Path, stem: str, variant: str | None = None) -> dict[str, np.ndarray]:
    """All tensors of one component as numpy arrays, keyed by their PyTorch names."""
    state: dict[str, np.ndarray] = {}
    for f in weight_files(folder, stem, variant):
        state.update(tensor_files.read(f))
    return state


# ------------------------------------------------------------------------------------- PyTorch -> Flax
_ATTN_TO_FLAX = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out_0": "proj_attn"}


def diffusers_rename(name: str, arr: np.ndarray, expected: Mapping[FlatKey, Any]) -> tuple[FlatKey, np.ndarray]:
    """diffusers' PyTorch->Flax rule for one tensor (its `rename_key_and_reshape_tensor`, minus the bare assert)."""
    from diffusers.models.modeling_flax_pytorch_utils import rename_key, rename_key_and_reshape_tensor

    key = tuple(rename_key(name).split("."))
    if len(key) > 1 and key[-2] in _ATTN_TO_FLAX:
        cand = key[:-2] + (_ATTN_TO_FLAX[key[-2]], "kernel" if key[-1] == "weight" else key[-1])
        if cand in expected:
            return cand, arr.T
    return rename_key_and_reshape_tensor(key, arr, expected)


def transformers_rename(name: str, arr: np.ndarray, expected: Mapping[FlatKey, Any]) -> tuple[FlatKey, np.ndarray]:
    """transformers' PyTorch->Flax rule for one tensor (CLIP text towers)."""
    from transformers.modeling_flax_pytorch_utils import rename_key_and_reshape_tensor

    return rename_key_and_reshape_tensor(tuple(name.split(".")), arr, expected, "text_model")


# The order and wording of today's messages: mis-shaped (and doubly filled) tensors, then missing, then unexpected.
_WORDING = state_dict.Wording(header="{what}: checkpoint does not match the model config.",
                              order=("misshaped", "missing", "unexpected"))


def convert_state_dict(state: Mapping[str, np.ndarray], abstract_params, rename: Callable, *, what: str,
                       dtype=np.float32, pt_name: Callable[[FlatKey, int], str] | None = None) -> dict:
    """PyTorch-named tensors -> nested Flax params shaped like `abstract_params`; strict, errors name tensors.

    `pt_name(flax_key, ndim)` gives the PyTorch name of a missing tensor for the error message.
    """
    expected = flatten_dict(dict(abstract_params))
    # Checked in the checkpoint's names: got = every tensor (Flax layout; None: a parameter already filled), want =
    # each reached parameter under the name that reached it, then each unreached one under its label.
    flat, source, got, want, reached = {}, {}, {}, {}, {}
    for name, arr in state.items():
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        pt_shape = tuple(arr.shape)
        key, arr = rename(name, arr, expected)
        key = tuple(key)
        got[name] = tuple(arr.shape)
        if key not in expected:
            continue
        want[name], reached[name] = tuple(expected[key].shape), (key, pt_shape)
        if got[name] != want[name]:
            continue
        if key in flat:
            got[name] = None
        else:
            flat[key] = np.asarray(arr, dtype=dtype)
            source[key] = name
    keys = {key for key, _ in reached.values()}
    want.update({(f"{pt_name(k, len(expected[k].shape))} (Flax {'/'.join(k)})" if pt_name else "/".join(k)):
                 tuple(expected[k].shape) for k in expected if k not in keys})

    def misshaped(name, shape, expects):
        key, pt_shape = reached[name]
        if shape is None:
            return f"shape mismatch: {name}: maps to Flax {'/'.join(key)}, already filled by {source[key]}"
        return (f"shape mismatch: {name}: checkpoint {pt_shape} (as Flax {'/'.join(key)} {shape})"
                f" but the model expects {expects}")

    state_dict.check(got, want, dataclasses.replace(_WORDING, misshaped=misshaped), error=WeightError, what=what)
    return unflatten_dict(flat)


def abstract_params(module) -> dict:
    """The module's parameter tree as ShapeDtypeStructs (diffusers Flax models: nothing is allocated)."""
    return jax.eval_shape(module.init_weights, jax.random.PRNGKey(0))


# ------------------------------------------------------------------------------------- Flax -> PyTorch
# PyTorch ModuleList/Sequential containers: Flax flattens `down_blocks.0` to `down_blocks_0` (and the UNet's
# attention output is `to_out_0` <- `to_out.0`); every other `_<digit>` (time_embedding.linear_1, ...) is part
# of the PyTorch attribute name and stays. `_ATTN_TO_PT` covers modules named query/key/value/proj_attn.
_PT_LISTS = {"down_blocks", "up_blocks", "resnets", "attentions", "transformer_blocks", "upsamplers",
             "downsamplers", "net", "to_out"}
_ATTN_TO_PT = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def flax_to_pytorch_name(key: FlatKey, arr: np.ndarray) -> tuple[str, np.ndarray]:
    """Inverse of diffusers' PyTorch->Flax rule for one tensor: (PyTorch name, PyTorch-layout array)."""
    parts: list[str] = []
    for p in key[:-1]:
        m = re.fullmatch(r"(.+)_(\d+)", p)
        parts += [m.group(1), m.group(2)] if m and m.group(1) in _PT_LISTS else [p]
    if parts and parts[-1] in _ATTN_TO_PT:
        parts[-1] = _ATTN_TO_PT[parts[-1]]
    leaf = key[-1]
    if leaf == "kernel":  # conv HWIO -> OIHW, dense (in, out) -> (out, in)
        arr, leaf = (arr.transpose(3, 2, 0, 1) if arr.ndim == 4 else arr.T), "weight"
    elif leaf in ("scale", "embedding"):
        leaf = "weight"
    elif leaf != "bias":
        raise WeightError(f"Cannot export Flax parameter {'/'.join(key)}: unknown leaf name {leaf!r}.")
    return ".".join(parts + [leaf]), arr


def diffusers_pt_name(key: FlatKey, ndim: int) -> str:
    """PyTorch name of a diffusers Flax parameter (for error messages)."""
    return flax_to_pytorch_name(key, np.empty((0,) * ndim, np.float32))[0]


def transformers_pt_name(key: FlatKey, ndim: int) -> str:
    """PyTorch name of a Flax CLIP text-tower parameter (kernel/scale/embedding -> weight)."""
    return ".".join(key[:-1] + (("weight",) if key[-1] in ("kernel", "scale", "embedding") else key[-1:]))
