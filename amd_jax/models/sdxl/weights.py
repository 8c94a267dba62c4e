"""Diffusers-format SDXL folders <-> Flax params, without torch.

A folder (local path or any etils.epath URL such as gs://...) holds the usual diffusers layout:

    unet/config.json            unet/diffusion_pytorch_model[.fp16].safetensors  (or a sharded *.index.json)
    vae/config.json             vae/diffusion_pytorch_model[.fp16].safetensors
    text_encoder/config.json    text_encoder/model[.fp16].safetensors             (CLIP ViT-L text tower)
    text_encoder_2/config.json  text_encoder_2/model[.fp16].safetensors           (OpenCLIP bigG, with projection)
    tokenizer/, tokenizer_2/    vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json

Weights are read with `amd_jax.tensor_files` (safetensors), renamed with diffusers' / transformers' own
PyTorch->Flax rules and checked against the Flax model's abstract parameter tree (`jax.eval_shape`, nothing is
initialised): any missing, unexpected or mis-shaped tensor raises `WeightError` naming it. Params come back as
host numpy trees in the requested dtype (place them on devices with your own sharding).

`save_unet_pytorch` is the inverse for the UNet: Flax params -> `unet/diffusion_pytorch_model.safetensors` +
`unet/config.json` loadable by PyTorch `diffusers.UNet2DConditionModel.from_pretrained(out_dir, subfolder="unet")`.
"""

from __future__ import annotations

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

FlatKey = tuple[str, ...]
WEIGHT_STEMS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
                "text_encoder": "model", "text_encoder_2": "model"}
ALL_SUBFOLDERS = (*WEIGHT_STEMS, "tokenizer", "tokenizer_2")
_IGNORED_SUFFIXES = ("position_ids",)  # non-persistent buffers some older CLIP checkpoints still contain


class WeightError(ValueError):
    """A checkpoint does not match the model: lists every missing, unexpected or mis-shaped tensor by name."""


# ----------------------------------------------------------------------------------------------- files
def local_folder(path: str | os.PathLike, subfolders: tuple[str, ...] = ALL_SUBFOLDERS) -> pathlib.Path:
    """A local directory for `path`: itself if local, else a temp copy of the listed subfolders (gs://...).

    Staged copies are left in the system temp dir (the caller may delete them once the params are loaded).
    """
    s = os.fspath(path)
    if "://" not in s or s.startswith("file://"):
        p = pathlib.Path(s.removeprefix("file://"))
        if not p.is_dir():
            raise FileNotFoundError(f"SDXL model folder {s!r} does not exist or is not a directory.")
        return p
    from etils import epath

    return stage(epath.Path(s), subfolders)


def stage(src, subfolders: tuple[str, ...]) -> pathlib.Path:
    """Copy the files (not sub-directories) of `src/<sub>` for each existing subfolder to a local temp dir."""
    if not src.exists():
        raise FileNotFoundError(f"SDXL model folder {os.fspath(src)!r} does not exist.")
    dst = pathlib.Path(tempfile.mkdtemp(prefix="sdxl_stage_"))
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


def convert_state_dict(state: Mapping[str, np.ndarray], abstract_params, rename: Callable, *, what: str,
                       dtype=np.float32, pt_name: Callable[[FlatKey, int], str] | None = None) -> dict:
    """PyTorch-named tensors -> nested Flax params shaped like `abstract_params`; strict, errors name tensors.

    `pt_name(flax_key, ndim)` gives the PyTorch name of a missing tensor for the error message.
    """
    expected = flatten_dict(dict(abstract_params))
    flat, unexpected, mismatched, source = {}, [], [], {}
    for name, arr in state.items():
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        pt_shape = tuple(arr.shape)
        key, arr = rename(name, arr, expected)
        key = tuple(key)
        if key not in expected:
            unexpected.append(name)
        elif tuple(arr.shape) != tuple(expected[key].shape):
            mismatched.append(f"{name}: checkpoint {pt_shape} (as Flax {'/'.join(key)} {tuple(arr.shape)})"
                              f" but the model expects {tuple(expected[key].shape)}")
        elif key in flat:
            mismatched.append(f"{name}: maps to Flax {'/'.join(key)}, already filled by {source[key]}")
        else:
            flat[key] = np.asarray(arr, dtype=dtype)
            source[key] = name
    missing = [(f"{pt_name(k, len(expected[k].shape))} (Flax {'/'.join(k)})" if pt_name else "/".join(k))
               for k in expected if k not in flat and not mismatched_has(mismatched, k)]
    if missing or unexpected or mismatched:
        lines = [f"{what}: checkpoint does not match the model config."]
        lines += [f"  shape mismatch: {m}" for m in mismatched]
        lines += [f"  missing tensor: {m}" for m in missing]
        lines += [f"  unexpected tensor: {u}" for u in unexpected]
        raise WeightError("\n".join(lines))
    return unflatten_dict(flat)


def mismatched_has(mismatched: list[str], key: FlatKey) -> bool:
    """Whether a Flax key was already reported as mis-shaped (so it is not also listed as missing)."""
    tag = f"Flax {'/'.join(key)} "
    return any(tag in m for m in mismatched)


# ------------------------------------------------------------------------------------------- loaders
# Config values the Flax UNet hard-codes: anything else would silently compute a different network.
_UNET_FIXED = {
    "act_fn": ("silu",), "norm_num_groups": (32,), "norm_eps": (1e-5,), "conv_in_kernel": (3,),
    "conv_out_kernel": (3,), "time_embedding_type": ("positional",), "class_embed_type": (None,),
    "num_class_embeds": (None,), "encoder_hid_dim_type": (None,), "resnet_time_scale_shift": ("default",),
    "mid_block_scale_factor": (1, 1.0), "time_cond_proj_dim": (None,), "center_input_sample": (False,),
    "upcast_attention": (None, False), "dual_cross_attention": (False,), "cross_attention_norm": (None,),
    "num_attention_heads": (None,), "time_embedding_dim": (None,), "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,), "resnet_skip_time_act": (False,), "resnet_out_scale_factor": (1, 1.0),
    "class_embeddings_concat": (False,), "attention_type": ("default",), "downsample_padding": (1,),
    "addition_embed_type": (None, "text_time"),
}


def check_unet_config(config: Mapping[str, Any]) -> None:
    """Raise if a UNet config uses an option diffusers' Flax UNet does not implement."""
    bad = {k: config[k] for k, ok in _UNET_FIXED.items() if k in config and config[k] not in ok}
    if bad:
        raise ValueError(f"UNet config options not supported by FlaxUNet2DConditionModel: {bad}.")


def unet_from_config(config: Mapping[str, Any], dtype=None):
    """A FlaxUNet2DConditionModel (compute dtype `dtype`, default float32) from a diffusers UNet config dict."""
    import jax.numpy as jnp
    from diffusers import FlaxUNet2DConditionModel

    check_unet_config(config)
    fields = set(FlaxUNet2DConditionModel.__dataclass_fields__) - {"dtype", "parent", "name"}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    return FlaxUNet2DConditionModel(**kwargs, dtype=dtype or jnp.float32)


def vae_from_config(config: Mapping[str, Any], dtype=None):
    """A FlaxAutoencoderKL from a diffusers AutoencoderKL config dict."""
    import jax.numpy as jnp
    from diffusers import FlaxAutoencoderKL

    fields = set(FlaxAutoencoderKL.__dataclass_fields__) - {"dtype", "parent", "name"}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    return FlaxAutoencoderKL(**kwargs, dtype=dtype or jnp.float32)


def abstract_params(module) -> dict:
    """The module's parameter tree as ShapeDtypeStructs (diffusers Flax models: nothing is allocated)."""
    return jax.eval_shape(module.init_weights, jax.random.PRNGKey(0))


def load_unet(path, *, param_dtype=np.float32, dtype=None, variant: str | None = None):
    """(FlaxUNet2DConditionModel, params) from `<path>/unet`; params are numpy arrays of `param_dtype`."""
    folder = local_folder(path, ("unet",))
    module = unet_from_config(read_config(folder, "unet"), dtype)
    state = load_state_dict(folder / "unet", WEIGHT_STEMS["unet"], variant)
    return module, convert_state_dict(state, abstract_params(module), diffusers_rename, what=f"{folder}/unet",
                                      dtype=param_dtype, pt_name=diffusers_pt_name)


def load_vae(path, *, param_dtype=np.float32, dtype=None, variant: str | None = None, subfolder: str = "vae"):
    """(FlaxAutoencoderKL, params) from `<path>/<subfolder>` (keep the SDXL VAE in float32: it overflows in fp16).
    subfolder '' reads a bare AutoencoderKL folder (e.g. stabilityai/sd-vae-ft-ema)."""
    folder = local_folder(path, (subfolder,))
    module = vae_from_config(read_config(folder, subfolder), dtype)
    state = load_state_dict(folder / subfolder, WEIGHT_STEMS["vae"], variant)
    return module, convert_state_dict(state, abstract_params(module), diffusers_rename,
                                      what=f"{folder / subfolder}", dtype=param_dtype, pt_name=diffusers_pt_name)


def load_text_encoder(path, subfolder: str, *, param_dtype=np.float32, dtype=None, variant: str | None = None):
    """(FlaxCLIPTextModel[WithProjection], params) from `<path>/<subfolder>`; the class follows the config's
    `architectures` ('CLIPTextModelWithProjection' for text_encoder_2)."""
    import jax.numpy as jnp
    from transformers import CLIPTextConfig, FlaxCLIPTextModel, FlaxCLIPTextModelWithProjection

    folder = local_folder(path, (subfolder,))
    raw = read_config(folder, subfolder)
    config = CLIPTextConfig.from_pretrained(str(folder / subfolder), local_files_only=True)
    with_proj = "CLIPTextModelWithProjection" in (raw.get("architectures") or [])
    cls = FlaxCLIPTextModelWithProjection if with_proj else FlaxCLIPTextModel
    model = cls(config, dtype=dtype or jnp.float32, _do_init=False)
    shapes = jax.eval_shape(lambda r: model.init_weights(r, (1, config.max_position_embeddings)),
                            jax.random.PRNGKey(0))
    state = load_state_dict(folder / subfolder, WEIGHT_STEMS.get(subfolder, "model"), variant)
    return model, convert_state_dict(state, shapes, transformers_rename, what=f"{folder}/{subfolder}",
                                     dtype=param_dtype, pt_name=transformers_pt_name)


def transformers_pt_name(key: FlatKey, ndim: int) -> str:
    """PyTorch name of a Flax CLIP text-tower parameter (kernel/scale/embedding -> weight)."""
    return ".".join(key[:-1] + (("weight",) if key[-1] in ("kernel", "scale", "embedding") else key[-1:]))


# ------------------------------------------------------------------------------------- Flax -> PyTorch
# PyTorch ModuleList/Sequential containers: Flax flattens `down_blocks.0` to `down_blocks_0` (and the UNet's
# attention output is `to_out_0` <- `to_out.0`); every other `_<digit>` (time_embedding.linear_1, ...) is part
# of the PyTorch attribute name and stays. `_ATTN_TO_PT` covers modules named query/key/value/proj_attn.
_PT_LISTS = {"down_blocks", "up_blocks", "resnets", "attentions", "transformer_blocks", "upsamplers",
             "downsamplers", "net", "to_out"}
_ATTN_TO_PT = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def flax_to_pytorch_name(key: FlatKey, arr: np.ndarray) -> tuple[str, np.ndarray]:
    """Inverse of diffusers' PyTorch->Flax rule for one UNet tensor: (PyTorch name, PyTorch-layout array)."""
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


def unet_state_dict_pytorch(params, dtype=np.float32) -> dict[str, np.ndarray]:
    """Flax UNet params (diffusers' tree, or unet_flax's scanned one: unstacked first) -> PyTorch-named,
    PyTorch-layout numpy arrays; checked by mapping each name back."""
    from amd_jax.models.sdxl.unet_flax import unstack_layers

    flat = flatten_dict(unstack_layers(params))
    out: dict[str, np.ndarray] = {}
    for key, value in flat.items():
        name, arr = flax_to_pytorch_name(key, np.asarray(value))
        back, _ = diffusers_rename(name, arr, flat)
        if tuple(back) != key or name in out:
            raise WeightError(f"Export of Flax {'/'.join(key)} as {name!r} does not map back (got {back}).")
        out[name] = np.ascontiguousarray(arr, dtype=dtype)
    return out


def pytorch_unet_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A PyTorch UNet2DConditionModel config.json dict from a (PyTorch or Flax-module) config mapping."""
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items()
           if not k.startswith("_") and k not in ("dtype", "parent", "name")}
    check_unet_config(cfg)
    return {"_class_name": "UNet2DConditionModel", **cfg}


def save_unet_pytorch(out_dir, params, config, dtype=np.float32) -> pathlib.Path:
    """Write `<out_dir>/unet/{diffusion_pytorch_model.safetensors, config.json}` (diffusers PyTorch layout).

    `config` is the UNet config dict (e.g. `read_config(src, "unet")`) or the Flax module (its `.config`).
    Load with `UNet2DConditionModel.from_pretrained(out_dir, subfolder="unet")`. Returns the unet folder.
    """
    config = getattr(config, "config", config)
    unet_dir = pathlib.Path(out_dir) / "unet"
    unet_dir.mkdir(parents=True, exist_ok=True)
    state = unet_state_dict_pytorch(params, dtype)
    tensor_files.write(unet_dir / "diffusion_pytorch_model.safetensors", state, metadata={"format": "pt"})
    (unet_dir / "config.json").write_text(json.dumps(pytorch_unet_config(config), indent=2, sort_keys=True))
    return unet_dir
