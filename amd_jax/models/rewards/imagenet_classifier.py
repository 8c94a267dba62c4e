"""Class-conditional ImageNet reward: log p(target class | image) of a frozen pretrained ViT classifier.

``load_vit_classifier(path)`` reads a transformers ``ViTForImageClassification`` folder (local or gs://), e.g.
google/vit-base-patch16-224: ``config.json``, ``model.safetensors`` (PyTorch layout; or the same keys in
``model.npz``) and ``preprocessor_config.json`` (``ViTImageProcessor``). Nothing is imported from torch and no
pickle is read: the tensors are converted to transformers' Flax ViT with the CLIP scorers' converter (weights.py).

``log_prob(params, images, labels) -> [B] float32`` is pure, jit-able and differentiable: images NHWC in [-1, 1]
at any square size are resized inside to the classifier's input size exactly as ``ViTImageProcessor`` does on
uint8 images (PIL bilinear of both sides, antialiased when downscaling; see preprocess.py for the < 1 uint8 level
difference of doing it in float32), rescaled and normalised with the processor's mean/std.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from transformers import ViTConfig
from transformers.models.vit.modeling_flax_vit import FlaxViTForImageClassificationModule

from amd_jax.models.rewards import weights as W
from amd_jax.models.rewards.preprocess import PreprocessConfig, preprocess

_WEIGHTS = ("model.safetensors", "model.npz")
_PIL_BILINEAR = 2


@dataclasses.dataclass(eq=False)
class ImageClassifier:
    """A frozen image classifier reward: ``params`` plus pure functions (static config in the object)."""

    name: str
    config: ViTConfig
    params: Any
    preprocess_cfg: PreprocessConfig
    dtype: Any = jnp.float32

    @functools.cached_property
    def module(self) -> FlaxViTForImageClassificationModule:
        return FlaxViTForImageClassificationModule(self.config, dtype=self.dtype)

    def pixel_logits(self, params, pixel_values):
        """[B, num_classes] float32 logits of already preprocessed NHWC pixels."""
        out = self.module.apply({"params": params}, pixel_values.astype(self.dtype), deterministic=True)
        return out.logits.astype(jnp.float32)

    def log_prob(self, params, images, labels):
        """log p(labels | images) [B] float32: images [B, S, S, 3] in [-1, 1], labels [B] int class ids."""
        if images.ndim != 4 or images.shape[1] != images.shape[2]:
            raise ValueError(f"expected square NHWC images [B, S, S, 3], got shape {images.shape}")
        logits = self.pixel_logits(params, preprocess(images, self.preprocess_cfg))
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return jnp.take_along_axis(log_p, labels[:, None].astype(jnp.int32), axis=1)[:, 0]

    def abstract_params(self):
        """ShapeDtypeStruct tree of the Flax params for this config (no memory)."""
        return abstract_vit_params(self.config)


def abstract_vit_params(config: ViTConfig):
    """eval_shape of the Flax ViT classifier's init: the expected param paths and shapes."""
    module = FlaxViTForImageClassificationModule(config)
    px = jnp.zeros((1, config.image_size, config.image_size, config.num_channels), jnp.float32)
    return jax.eval_shape(functools.partial(module.init, jax.random.PRNGKey(0), px))["params"]


def vit_preprocess_config(proc: dict, image_size: int, quantize: bool = False) -> PreprocessConfig:
    """ViTImageProcessor settings (preprocessor_config.json) -> PreprocessConfig; refuses settings not reproduced."""
    size = proc.get("size", image_size)
    hw = (size, size) if isinstance(size, int) else (size.get("height"), size.get("width"))
    wanted = {"do_resize": True, "do_rescale": True, "do_normalize": True, "resample": _PIL_BILINEAR,
              "rescale_factor": 1 / 255}
    bad = [f"{k}={proc[k]!r} (need {v!r})" for k, v in wanted.items()
           if k in proc and (abs(proc[k] - v) > 1e-12 if k == "rescale_factor" else proc[k] != v)]
    if hw != (image_size, image_size):
        bad.append(f"size={size!r} (need {image_size}x{image_size}, the model's image_size)")
    if bad:
        raise NotImplementedError("preprocessor_config.json: only ViTImageProcessor's bilinear resize of both sides "
                                  "to the model's image size, then rescale and normalise, is reproduced; got "
                                  + ", ".join(bad))
    mean, std = tuple(proc.get("image_mean", (0.5,) * 3)), tuple(proc.get("image_std", (0.5,) * 3))
    return PreprocessConfig(image_size=image_size, mean=mean, std=std, crop="none", quantize=quantize,
                            resample="bilinear")


def load_vit_classifier(path, name: str = "imagenet_vit", dtype=jnp.float32, quantize: bool = False):
    """A transformers ViTForImageClassification folder -> ImageClassifier (see the module docstring)."""
    folder = W.as_path(path)
    for needed in ("config.json", "preprocessor_config.json"):
        if not (folder / needed).exists():
            raise FileNotFoundError(f"no {needed} in {folder}: expected a transformers ViTForImageClassification "
                                    f"folder (config.json, model.safetensors, preprocessor_config.json)")
    config = ViTConfig.from_dict(W.read_json(folder / "config.json"))
    weights = W.find_file(folder, _WEIGHTS, (".safetensors",), "transformers weight file")
    params = W.convert_hf_state_dict(W.load_tensors(weights), abstract_vit_params(config), what="ViT classifier")
    cfg = vit_preprocess_config(W.read_json(folder / "preprocessor_config.json"), config.image_size, quantize)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    return ImageClassifier(name, config, params, cfg, dtype)
