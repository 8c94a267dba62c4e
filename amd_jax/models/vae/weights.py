"""The VAE's weights (diffusers' FlaxAutoencoderKL), shared by SDXL and the ImageNet task: its module from a
config.json and its params from a diffusers folder's vae/ subfolder (or a bare AutoencoderKL folder such as
stabilityai/sd-vae-ft-ema), read and checked by models/common/hf_folders.py (`WeightError` names every missing,
unexpected or mis-shaped tensor). Encoding and decoding are models/vae/autoencoder.py.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from amd_jax.models.common.hf_folders import (WEIGHT_STEMS, abstract_params, convert_state_dict, diffusers_pt_name,
                                              diffusers_rename, load_state_dict, local_folder, read_config)


def vae_from_config(config: Mapping[str, Any], dtype=None):
    """A FlaxAutoencoderKL from a diffusers AutoencoderKL config dict."""
    import jax.numpy as jnp
    from diffusers import FlaxAutoencoderKL

    fields = set(FlaxAutoencoderKL.__dataclass_fields__) - {"dtype", "parent", "name"}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    return FlaxAutoencoderKL(**kwargs, dtype=dtype or jnp.float32)


def load_vae(path, *, param_dtype=np.float32, dtype=None, variant: str | None = None, subfolder: str = "vae"):
    """(FlaxAutoencoderKL, params) from `<path>/<subfolder>` (keep the SDXL VAE in float32: it overflows in fp16).
    subfolder '' reads a bare AutoencoderKL folder (e.g. stabilityai/sd-vae-ft-ema)."""
    folder = local_folder(path, (subfolder,))
    module = vae_from_config(read_config(folder, subfolder), dtype)
    state = load_state_dict(folder / subfolder, WEIGHT_STEMS["vae"], variant)
    return module, convert_state_dict(state, abstract_params(module), diffusers_rename,
                                      what=f"{folder / subfolder}", dtype=param_dtype, pt_name=diffusers_pt_name)
