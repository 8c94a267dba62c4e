"""umT5 encoder weights, without torch: transformers' `text_encoder/` folder (Wan2.1's diffusers layout) -> the
Flax tree of models/umt5/encoder.py, every tensor checked before anything is compiled.

    text_encoder/config.json                        transformers' UMT5Config (model_type 'umt5')
    text_encoder/model[.<variant>].safetensors      or model.safetensors.index.json + its shards

The folder is read and the tensors are checked by models/common/hf_folders.py and state_dict.py (the shared
readers): any missing, unexpected or mis-shaped tensor raises `WeightError` naming it. A folder of another
model (T5, CLIP, ...; its config's model_type is not 'umt5') or an umT5 option the Flax encoder does not
implement is refused in one line. UMT5EncoderModel ties `encoder.embed_tokens` to `shared`; save_pretrained
writes `shared.weight` only, other writers may keep both (they must be equal) or only embed_tokens.

PyTorch names -> Flax keys: `block.<i>` / `layer.<i>` -> `block_<i>` / `layer_<i>`; a Linear's weight (out, in)
-> kernel (in, out); an Embedding's weight (`shared`, `relative_attention_bias`) -> embedding; an RMS norm's
weight stays `weight`. With `scan_layers` the looped tree is stacked (`encoder.stack_blocks`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Any, Mapping

import numpy as np

from amd_jax.models.common.hf_folders import (WEIGHT_STEMS, WeightError, convert_state_dict, load_state_dict,
                                              local_folder, read_config)
from amd_jax.models.umt5.encoder import ARCH_FIELDS, UMT5Config, abstract_params, stack_blocks

SUBFOLDER = "text_encoder"
EMBEDDINGS = ("shared", "relative_attention_bias")
NORMS = ("layer_norm", "final_layer_norm")
TIED = "encoder.embed_tokens.weight"
SUPPORTED_FFN = "gated-gelu"  # transformers: gelu_new (tanh) gate times a linear, umT5's and Wan's


# -------------------------------------------------------------------------------------------------- config
def config_from_hf(raw: Mapping[str, Any], what: str, **knobs) -> UMT5Config:
    """A UMT5Config from transformers' config.json dict, with run-time `knobs` (dtype, scan_layers, remat, ...).
    Refuses another model's config, a decoder and a feed-forward other than 'gated-gelu' in one line."""
    model_type, archs = raw.get("model_type"), raw.get("architectures") or []
    if model_type != "umt5":
        raise WeightError(f"{what} is a {model_type!r} model ({', '.join(archs) or 'no architectures'}), not umT5's "
                          "encoder (model_type 'umt5'). Fix: point to the text_encoder/ folder of a Wan2.1 diffusers "
                          "checkpoint (UMT5EncoderModel).")
    ffn = raw.get("feed_forward_proj", SUPPORTED_FFN)
    if ffn != SUPPORTED_FFN or raw.get("is_decoder", False):
        raise WeightError(f"{what}: feed_forward_proj={ffn!r}, is_decoder={raw.get('is_decoder', False)}; the Flax "
                          f"umT5 encoder implements feed_forward_proj={SUPPORTED_FFN!r} encoders (Wan's umT5-XXL).")
    defaults = {f.name: f.default for f in dataclasses.fields(UMT5Config)}
    missing = [k for k in ARCH_FIELDS if k not in raw and defaults[k] is dataclasses.MISSING]
    if missing:
        raise WeightError(f"{what} lacks {missing}: write the config.json transformers' UMT5Config saves.")
    return UMT5Config(**{k: raw[k] for k in ARCH_FIELDS if k in raw}, **knobs)


# ------------------------------------------------------------------------------------- PyTorch <-> Flax names
def flax_key(name: str) -> tuple[tuple[str, ...], bool]:
    """(Flax key, transpose?) of a PyTorch tensor name; names the model does not have map to keys it lacks, so
    the check reports them as unexpected."""
    parts = re.sub(r"\.(\d+)(?=\.)", r"_\1", name).split(".")
    if parts[-1] != "weight" or len(parts) < 2:
        return tuple(parts), False
    module = tuple(parts[:-1])
    if module[-1] in EMBEDDINGS:
        return module + ("embedding",), False
    if module[-1] in NORMS:
        return module + ("weight",), False
    return module + ("kernel",), True


def pytorch_name(key: tuple[str, ...], ndim: int = 0) -> str:
    """Inverse of `flax_key`: the PyTorch name of a (looped-tree) Flax key, e.g. for error messages."""
    parts = [re.sub(r"^(block|layer)_(\d+)$", r"\1.\2", p) for p in key[:-1]]
    return ".".join(parts + ["weight"])


def _rename(name: str, arr: np.ndarray, expected) -> tuple[tuple[str, ...], np.ndarray]:
    key, transpose = flax_key(name)
    return key, (arr.T if transpose and arr.ndim == 2 else arr)


def untie_embedding(state: Mapping[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """`state` with the tied copy `encoder.embed_tokens.weight` folded into `shared.weight` (kept when it is the
    only copy; dropped when equal to it; WeightError when the two differ)."""
    state = dict(state)
    if TIED in state:
        tied = state.pop(TIED)
        if "shared.weight" not in state:
            state["shared.weight"] = tied
        elif np.shape(tied) != np.shape(state["shared.weight"]) or not np.array_equal(tied, state["shared.weight"]):
            raise WeightError(f"{what}: {TIED} differs from shared.weight; UMT5EncoderModel uses one table for both. "
                              "Fix: re-save the encoder with save_pretrained.")
    return state


def params_from_state(state: Mapping[str, np.ndarray], cfg: UMT5Config, what: str) -> dict:
    """PyTorch-named tensors -> the Flax tree of `UMT5Encoder(cfg)` in cfg.param_dtype (stacked if scan_layers);
    WeightError names every missing, unexpected or mis-shaped tensor."""
    looped = dataclasses.replace(cfg, scan_layers=False, remat="none")
    params = convert_state_dict(untie_embedding(state, what), abstract_params(looped), _rename, what=what,
                                dtype=np.dtype(cfg.jnp_param_dtype), pt_name=pytorch_name)
    return stack_blocks(params) if cfg.scan_layers and cfg.num_layers > 1 else params


# ------------------------------------------------------------------------------------------------- loading
def load_text_encoder(path: str | os.PathLike, subfolder: str = SUBFOLDER, *, variant: str | None = None,
                      **knobs) -> tuple[UMT5Config, dict]:
    """(UMT5Config, numpy Flax params) of `<path>/<subfolder>` (local or gs://; subfolder '' = the folder itself).
    `knobs` are UMT5Config's run-time fields (dtype='float32', param_dtype, scan_layers=True, remat='block')."""
    if "://" not in os.fspath(path) and not pathlib.Path(path, subfolder).is_dir():
        raise FileNotFoundError(f"No umT5 text encoder folder {os.path.join(os.fspath(path), subfolder)!r}: give the "
                                f"Wan2.1 diffusers folder (with {SUBFOLDER}/) or the encoder folder itself.")
    folder = local_folder(path, (subfolder,)) / subfolder
    what = str(folder)
    cfg = config_from_hf(read_config(folder, ""), f"{what}/config.json", **knobs)
    state = load_state_dict(folder, WEIGHT_STEMS[SUBFOLDER], variant)
    return cfg, params_from_state(state, cfg, what)
