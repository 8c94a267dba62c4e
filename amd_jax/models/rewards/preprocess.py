"""CLIP / ViT image preprocessing in JAX (runs inside jit, differentiable): [-1, 1] NHWC at any size -> model input.

Reproduces the evaluation transforms of the references on float images:

* open_clip / HPSv2 (``crop="torchvision"``): ``Resize(S, BICUBIC)`` of the shortest side (PIL bicubic, which
  antialiases when downscaling), ``CenterCrop(S)`` with torchvision's ``round((H - S) / 2)`` offset,
  ``ToTensor``, ``Normalize(mean, std)``.
* transformers ``CLIPImageProcessor`` (PickScore, torchmetrics' CLIPScore; ``crop="hf"``): resize of the
  shortest edge with PIL bicubic, centre crop with offset ``(H - S) // 2``, rescale 1/255, normalise.
* transformers ``ViTImageProcessor`` (the ImageNet classifier reward; ``crop="none"``, ``resample="bilinear"``):
  resize both sides to S with PIL bilinear (antialiased when downscaling; the aspect ratio is not kept), no crop,
  rescale 1/255, normalise.
* transformers ``ConvNextImageProcessor`` (microsoft/resnet-50; ``crop="hf"``, ``resize_size=int(S / crop_pct)``):
  PIL bicubic resize of the shortest edge to ``resize_size``, centre crop S with offset ``(H - S) // 2``.

Both compute the resized size as ``(S, int(S * long / short))``. The resize and the crop are fused into one
``jax.image.scale_and_translate`` with the Keys cubic kernel (a = -0.5, the kernel PIL uses; or the triangle
kernel of PIL's bilinear), widened by the
downscale factor when antialiasing exactly as PIL's ``support * scale``, weights renormalised per output pixel
like PIL's. Known differences from the PIL path, measured in tests/test_rewards_clip.py:

* PIL works on uint8 images: it rounds (and clips) to uint8 after the horizontal AND after the vertical pass
  (with 22-bit fixed-point weights). Here the two passes are done in the same order with the clip in between,
  but in float32, so values differ by < 1 uint8 level (measured on 45x37, 30x64, 96x70 -> 32: max 0.97 levels,
  mean 0.25 levels, i.e. <= 0.0146 after dividing by OpenAI's std). ``quantize=True`` rounds both passes to the
  1/255 grid with a straight-through gradient: then all but 0.07-0.33% of the values are bit-identical to the
  PIL path and the rest differ by one level (rounding ties of the fixed-point arithmetic).
* Inputs are clipped to [-1, 1] (a uint8 image cannot hold anything else) and the resized image is clipped to
  [0, 1] (PIL clips its bicubic overshoot); gradients are zero where clipping is active.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Static preprocessing settings of one CLIP model."""

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    crop: str = "torchvision"  # "torchvision" (open_clip, HPSv2), "hf" (CLIPImageProcessor), "none" (ViT: S x S)
    quantize: bool = False  # round to the uint8 grid (straight-through gradient), like the PIL path
    resample: str = "bicubic"  # PIL's filter: "bicubic" (CLIP) or "bilinear" (ViTImageProcessor's default)
    resize_size: int = 0  # shortest side before the crop; 0: image_size (ConvNextImageProcessor: S / crop_pct)

    def __post_init__(self):
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.resample not in _METHODS:
            raise ValueError(f"resample must be one of {sorted(_METHODS)}, got {self.resample!r}")


CROPS = ("torchvision", "hf", "none")
_METHODS = {"bicubic": "cubic", "bilinear": "linear"}  # PIL filter -> jax.image kernel


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Shortest side -> `size`, longest side -> int(size * long / short) (torchvision and transformers alike)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def crop_offset(resized: int, size: int, crop: str) -> int:
    """Top/left offset of a centre crop of `size` from `resized` pixels."""
    if crop == "none":
        return 0
    if crop == "torchvision":
        return int(round((resized - size) / 2.0))
    return (resized - size) // 2


def resize_and_crop(images01: jax.Array, size: int, crop: str = "torchvision", quantize: bool = False,
                    resample: str = "bicubic", resize_size: int = 0) -> jax.Array:
    """Antialiased shortest-side resize to `resize_size` (0: `size`) fused with a centre crop of `size`:
    [B,H,W,C] -> [B,S,S,C]. crop="none": both sides are resized to `size` (no crop, aspect ratio not kept).
    """
    _, height, width, _ = images01.shape
    rh, rw = (size, size) if crop == "none" else resized_size(height, width, resize_size or size)
    if rh < size or rw < size:
        raise ValueError(f"image {height}x{width} resizes to {rh}x{rw}, smaller than the crop {size}")
    top, left = crop_offset(rh, size, crop), crop_offset(rw, size, crop)
    # PIL resamples horizontally, stores the uint8 (clipped) intermediate, then resamples vertically; do the
    # same two passes (clip between them). Output pixel j of the crop is pixel j + offset of the resized image,
    # hence translation = -offset.
    batch, channels = images01.shape[0], images01.shape[3]
    x = images01
    if (rw, left, size) != (width, 0, width):
        x = jnp.clip(_resample_axis(x, 2, (batch, height, size, channels), rw / width, -left, resample), 0.0, 1.0)
        if quantize:
            x = _round_ste(x)
    if (rh, top, size) != (height, 0, height):
        x = _resample_axis(x, 1, (batch, size, size, channels), rh / height, -top, resample)
    return x


def _round_ste(x: jax.Array) -> jax.Array:
    """Round to the 1/255 grid with a straight-through (identity) gradient."""
    return x + jax.lax.stop_gradient(jnp.round(x * 255.0) / 255.0 - x)


def _resample_axis(x, axis, out_shape, scale, translation, resample="bicubic"):
    """Antialiased resampling along one axis with PIL's per-pass filter (Keys cubic a=-0.5, or triangle)."""
    return jax.image.scale_and_translate(
        x, out_shape, (axis,), jnp.array([scale], jnp.float32), jnp.array([translation], jnp.float32),
        method=_METHODS[resample], antialias=True,
    )


def preprocess(images: jax.Array, cfg: PreprocessConfig) -> jax.Array:
    """[-1, 1] NHWC images of any size -> normalised [B, S, S, 3] float32 model input."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected NHWC images with 3 channels, got shape {images.shape}")
    x = jnp.clip((images.astype(jnp.float32) + 1.0) * 0.5, 0.0, 1.0)
    x = jnp.clip(resize_and_crop(x, cfg.image_size, cfg.crop, cfg.quantize, cfg.resample, cfg.resize_size), 0.0, 1.0)
    if cfg.quantize:
        x = _round_ste(x)
    mean = jnp.asarray(cfg.mean, jnp.float32)
    std = jnp.asarray(cfg.std, jnp.float32)
    return (x - mean) / std
