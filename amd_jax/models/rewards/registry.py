"""Reward models by name: a plain ``name -> loader(path, **kwargs)`` dict.

Every loader returns an object with ``params`` and a pure ``score(params, images, text_tokens) -> [B] float32``
(images in [-1, 1] NHWC). Other rewards (e.g. toy models) are added by inserting into REWARD_LOADERS.

Weight folders (local path or gs://; only .safetensors / .npz tensors are read, never pickles or remote code):

* ``hpsv2``: open_clip ViT-H-14 + HPS checkpoint. ``open_clip_model.safetensors`` = the ``state_dict`` of
  ``HPS_v2_compressed.pt`` (or v2.1) converted once with torch (``convert_openclip.py``), open_clip tensor names;
  tokenizer ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``), e.g. from laion/CLIP-ViT-H-14-laion2B-s32B-b79K.
  Optional ``open_clip_config.json``; without it the built-in ViT-H-14 config and OpenAI mean/std are used.
* ``pickscore``: transformers folder of yuvalkirstain/PickScore_v1: ``config.json``, ``model.safetensors``,
  plus the processor files of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (``preprocessor_config.json``, ``vocab.json``,
  ``merges.txt``, ``special_tokens_map.json``).
* ``clip_l14``: openai/clip-vit-large-patch14 folder: ``config.json``, ``model.safetensors``,
  ``preprocessor_config.json``, ``vocab.json``, ``merges.txt``, ``special_tokens_map.json``.
* ``clip_g14``: open_clip ViT-g-14 (laion2b_s34b_b88k) folder: ``open_clip_model.safetensors``, ``vocab.json`` +
  ``merges.txt`` (or ``tokenizer.json``), optional ``open_clip_config.json``.
"""

from __future__ import annotations

from typing import Any, Callable

from amd_jax.models.rewards.clip_scorers import load_clip_g14, load_clip_l14, load_hpsv2, load_pickscore

REWARD_LOADERS: dict[str, Callable[..., Any]] = {
    "hpsv2": load_hpsv2,
    "pickscore": load_pickscore,
    "clip_l14": load_clip_l14,
    "clip_g14": load_clip_g14,
}


def load_reward(name: str, path, **kwargs):
    """REWARD_LOADERS[name](path, **kwargs) with a clear error for unknown names."""
    if name not in REWARD_LOADERS:
        raise KeyError(f"unknown reward {name!r}; known: {sorted(REWARD_LOADERS)}")
    return REWARD_LOADERS[name](path, **kwargs)
