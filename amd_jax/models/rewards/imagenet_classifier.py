"""Class-conditional ImageNet reward: log p(target class | image) of a frozen pretrained image classifier.

``load_image_classifier(path, arch)`` reads a transformers folder (local or gs://): ``config.json``,
``model.safetensors`` (PyTorch layout; or the same keys in ``model.npz``) and ``preprocessor_config.json``.
Nothing is imported from torch and no pickle is read: the tensors are converted to transformers' Flax classes with
the CLIP scorers' converter (weights.py; BatchNorm running statistics go to ``batch_stats``). Architectures:

* ``vit``: ``ViTForImageClassification``, e.g. google/vit-base-patch16-224, with ``ViTImageProcessor`` (PIL
  bilinear resize of both sides to the input size, antialiased when downscaling).
* ``resnet``: ``ResNetForImageClassification``, e.g. microsoft/resnet-50, with ``ConvNextImageProcessor`` (PIL
  bicubic resize of the shortest side to ``int(S / crop_pct)``, centre crop S; 256 px images are only cropped).

``log_prob(params, images, labels) -> [B] float32`` is pure, jit-able and differentiable: images NHWC in [-1, 1]
at any square size go through the processor's transform inside (preprocess.py, in float32: < 1 uint8 level from
PIL's uint8 path), then the network; ``params`` is the classifier's ``params`` attribute (its Flax variables).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
from transformers import ResNetConfig, ViTConfig
from transformers.models.resnet.modeling_flax_resnet import FlaxResNetForImageClassificationModule
from transformers.models.vit.modeling_flax_vit import FlaxViTForImageClassificationModule

from amd_jax.models.rewards import weights as W
from amd_jax.models.rewards.preprocess import PreprocessConfig, preprocess

_WEIGHTS = ("model.safetensors", "model.npz")
_PIL_BILINEAR, _PIL_BICUBIC = 2, 3
# arch -> (config class, Flax module class); config.json's model_type must equal the arch.
ARCHS = {"vit": (ViTConfig, FlaxViTForImageClassificationModule),
         "resnet": (ResNetConfig, FlaxResNetForImageClassificationModule)}
_BN_STATS = {"running_mean": "mean", "running_var": "var"}  # PyTorch BatchNorm buffers -> Flax batch_stats


@dataclasses.dataclass(eq=False)
class ImageClassifier:
    """A frozen image classifier reward: ``params`` plus pure functions (static config in the object)."""

    name: str
    arch: str
    config: Any
    params: Any  # the Flax variables: {"params": ...} (+ "batch_stats" for ResNet)
    preprocess_cfg: PreprocessConfig
    dtype: Any = jnp.float32

    @functools.cached_property
    def module(self):
        return ARCHS[self.arch][1](self.config, dtype=self.dtype)

    def pixel_logits(self, params, pixel_values):
        """[B, num_classes] float32 logits of already preprocessed NHWC pixels."""
        out = self.module.apply(params, pixel_values.astype(self.dtype), deterministic=True)
        return out.logits.astype(jnp.float32)

    def log_prob(self, params, images, labels):
        """log p(labels | images) [B] float32: images [B, S, S, 3] in [-1, 1], labels [B] int class ids."""
        if images.ndim != 4 or images.shape[1] != images.shape[2]:
            raise ValueError(f"expected square NHWC images [B, S, S, 3], got shape {images.shape}")
        logits = self.pixel_logits(params, preprocess(images, self.preprocess_cfg))
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return jnp.take_along_axis(log_p, labels[:, None].astype(jnp.int32), axis=1)[:, 0]


def abstract_variables(arch: str, config, image_size: int):
    """eval_shape of the Flax classifier's init: the expected variable paths and shapes (no memory)."""
    module = ARCHS[arch][1](config)
    px = jnp.zeros((1, image_size, image_size, config.num_channels), jnp.float32)
    return jax.eval_shape(functools.partial(module.init, jax.random.PRNGKey(0), px))


def convert_variables(state, abstract) -> dict:
    """PyTorch-layout tensors -> Flax variables; BatchNorm running stats to batch_stats, counters dropped."""
    stats = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] in _BN_STATS}
    weights = {k: v for k, v in state.items() if k not in stats and not k.endswith(".num_batches_tracked")}
    out = {"params": W.convert_hf_state_dict(weights, abstract["params"], what="image classifier")}
    if "batch_stats" in abstract or stats:
        flat = {tuple(k.rsplit(".", 1)[0].split(".")) + (_BN_STATS[k.rsplit(".", 1)[1]],): v for k, v in stats.items()}
        out["batch_stats"] = flax.traverse_util.unflatten_dict(flat)
        W.check_tree(out["batch_stats"], abstract.get("batch_stats", {}), "image classifier BatchNorm statistics")
    return out


def _refuse(proc: dict, wanted: dict, bad: list, what: str) -> None:
    """NotImplementedError naming every processor setting that differs from `wanted` (plus the `bad` already found)."""
    bad = [f"{k}={proc[k]!r} (need {v!r})" for k, v in wanted.items()
           if k in proc and (abs(proc[k] - v) > 1e-12 if isinstance(v, float) else proc[k] != v)] + bad
    if bad:
        raise NotImplementedError(f"preprocessor_config.json: only {what} is reproduced; got " + ", ".join(bad))


def vit_preprocess_config(proc: dict, image_size: int, quantize: bool = False) -> PreprocessConfig:
    """ViTImageProcessor settings (preprocessor_config.json) -> PreprocessConfig; refuses settings not reproduced."""
    size = proc.get("size", image_size)
    hw = (size, size) if isinstance(size, int) else (size.get("height"), size.get("width"))
    wanted = {"do_resize": True, "do_rescale": True, "do_normalize": True, "resample": _PIL_BILINEAR,
              "rescale_factor": 1 / 255}
    bad = [] if hw == (image_size, image_size) else [f"size={size!r} (need {image_size}x{image_size}, the model's "
                                                     f"image_size)"]
    _refuse(proc, wanted, bad, "ViTImageProcessor's bilinear resize of both sides to the model's image size, then "
                               "rescale and normalise,")
    mean, std = tuple(proc.get("image_mean", (0.5,) * 3)), tuple(proc.get("image_std", (0.5,) * 3))
    return PreprocessConfig(image_size=image_size, mean=mean, std=std, crop="none", quantize=quantize,
                            resample="bilinear")


def convnext_preprocess_config(proc: dict, quantize: bool = False) -> PreprocessConfig:
    """ConvNextImageProcessor settings (microsoft/resnet-50) -> PreprocessConfig; refuses settings not reproduced."""
    size = proc.get("size", {}).get("shortest_edge") if isinstance(proc.get("size"), dict) else proc.get("size")
    bad = [] if isinstance(size, int) and size < 384 else [f"size={proc.get('size')!r} (need shortest_edge < 384)"]
    wanted = {"do_resize": True, "do_rescale": True, "do_normalize": True, "resample": _PIL_BICUBIC,
              "rescale_factor": 1 / 255}
    _refuse(proc, wanted, bad, "ConvNextImageProcessor's bicubic shortest-edge resize to size / crop_pct, centre "
                               "crop, rescale and normalise,")
    crop_pct = proc.get("crop_pct", 224 / 256)
    return PreprocessConfig(image_size=size, mean=tuple(proc["image_mean"]), std=tuple(proc["image_std"]),
                            crop="hf", quantize=quantize, resample="bicubic", resize_size=int(size / crop_pct))


def load_image_classifier(path, arch: str, name: str = "", dtype=jnp.float32, quantize: bool = False):
    """A transformers image-classification folder of `arch` ('vit' or 'resnet') -> ImageClassifier."""
    folder = W.as_path(path)
    for needed in ("config.json", "preprocessor_config.json"):
        if not (folder / needed).exists():
            raise FileNotFoundError(f"no {needed} in {folder}: expected a transformers image-classification folder "
                                    f"(config.json, model.safetensors, preprocessor_config.json)")
    meta = W.read_json(folder / "config.json")
    if meta.get("model_type") != arch:
        raise ValueError(f"{folder}/config.json has model_type {meta.get('model_type')!r}, this reward needs "
                         f"{arch!r}: give the folder of a {ARCHS[arch][0].__name__[:-6]} classifier")
    config = ARCHS[arch][0].from_dict(meta)
    proc = W.read_json(folder / "preprocessor_config.json")
    cfg = vit_preprocess_config(proc, config.image_size, quantize) if arch == "vit" else \
        convnext_preprocess_config(proc, quantize)
    weights = W.find_file(folder, _WEIGHTS, (".safetensors",), "transformers weight file")
    variables = convert_variables(W.load_tensors(weights), abstract_variables(arch, config, cfg.image_size))
    variables = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), variables)
    return ImageClassifier(name or f"imagenet_{arch}", arch, config, variables, cfg, dtype)


def load_vit_classifier(path, **kwargs) -> ImageClassifier:
    """google/vit-base-patch16-224 style folder -> ImageClassifier (``imagenet_vit``)."""
    return load_image_classifier(path, "vit", **kwargs)


def load_resnet_classifier(path, **kwargs) -> ImageClassifier:
    """microsoft/resnet-50 style folder -> ImageClassifier (``imagenet_resnet``)."""
    return load_image_classifier(path, "resnet", **kwargs)
