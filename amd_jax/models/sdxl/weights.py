"""SDXL's UNet and text encoders: diffusers-format folders <-> Flax params, without torch.

The folder layout, the reading, the PyTorch->Flax renaming and the strict check (`WeightError` names every
missing, unexpected or mis-shaped tensor) are models/common/hf_folders.py, shared with the VAE
(models/vae/weights.py); this module adds what is SDXL's own: the UNet config options diffusers' Flax UNet
implements (`check_unet_config`), the UNet and CLIP text-encoder loaders, and the UNet export.

`save_unet_pytorch` is the inverse for the UNet: Flax params -> `unet/diffusion_pytorch_model.safetensors` +
`unet/config.json` loadable by PyTorch `diffusers.UNet2DConditionModel.from_pretrained(out_dir, subfolder="unet")`.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import jax
import numpy as np
from flax.traverse_util import flatten_dict

from amd_jax import tensor_files
from amd_jax.models.common.hf_folders import (WEIGHT_STEMS, WeightError, abstract_params, convert_state_dict,
                                              diffusers_pt_name, diffusers_rename, flax_to_pytorch_name,
                                              load_state_dict, local_folder, read_config, transformers_pt_name,
                                              transformers_rename)


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


def load_unet(path, *, param_dtype=np.float32, dtype=None, variant: str | None = None):
    """(FlaxUNet2DConditionModel, params) from `<path>/unet`; params are numpy arrays of `param_dtype`."""
    folder = local_folder(path, ("unet",))
    module = unet_from_config(read_config(folder, "unet"), dtype)
    state = load_state_dict(folder / "unet", WEIGHT_STEMS["unet"], variant)
    return module, convert_state_dict(state, abstract_params(module), diffusers_rename, what=f"{folder}/unet",
                                      dtype=param_dtype, pt_name=diffusers_pt_name)


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


# ------------------------------------------------------------------------------------- Flax -> PyTorch
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
