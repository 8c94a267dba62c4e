"""InceptionV3 FID feature network in Flax, a port of pytorch-fid's ``InceptionV3([3])``.

The network is pytorch-fid's ``fid_inception_v3`` (torchvision InceptionV3 with the FIDInceptionA/C/E_1/E_2
patches: average pools that ignore padding, a max pool in the last block) cut after the final average pool, so
it returns the 2048-d "pool3" features that FID uses (``heads=True`` adds ADM's spatial features and
unbiased logits, see :class:`InceptionV3`). Layout is NHWC; inputs are float images in [0, 1] which are
resized to 299x299 exactly like ``F.interpolate(mode='bilinear', align_corners=False)`` (no antialiasing) and
scaled to [-1, 1] (pytorch-fid's ``resize_input=True, normalize_input=True``). Everything is float32; convolutions
run at ``Precision.HIGHEST`` so TPUs do not silently drop to bf16 passes. ``resize_bilinear_tf1`` is the TF 1.x
resize of the 2015-12-05 graph that ADM's evaluator feeds (amd_jax/metrics/imagenet.py).

Weights: models/inception/weights.py (``load_inception``) reads pytorch-fid's weights converted by
``python -m amd_jax.tools.convert_inception``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008  # the 2015-12-05 graph's softmax: 1000 ImageNet classes + 8 unused
SPATIAL_CHANNELS = 7  # ADM's sFID: mixed_6/conv:0 (Mixed_6d.branch1x1, 17x17x192), first 7 channels


def _bilinear_matrix(n_in: int, n_out: int, half_pixel: bool = True) -> np.ndarray:
    """[n_out, n_in] weights of bilinear interpolation without antialias.

    ``half_pixel=True``: torch's ``align_corners=False`` (source ``(dst + 0.5) * in / out - 0.5``, clamped at 0).
    ``half_pixel=False``: TensorFlow 1.x ``ResizeBilinear(align_corners=False)``, the resize inside the 2015-12-05
    Inception graph that ADM's evaluator feeds (source ``dst * in / out``).
    """
    f32 = np.float32  # torch and TF do this index arithmetic in float32
    scale = f32(n_in) / f32(n_out)
    dst = np.arange(n_out, dtype=f32)
    src = np.maximum(scale * (dst + f32(0.5)) - f32(0.5), f32(0)) if half_pixel else dst * scale
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0.astype(f32)
    m = np.zeros((n_out, n_in), f32)
    np.add.at(m, (np.arange(n_out), i0), f32(1) - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def resize_bilinear_torch(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Resize NHWC ``x`` to ``size`` = (height, width) as torch ``F.interpolate(bilinear, align_corners=False)``.

    Separable: one [out, in] interpolation matrix per axis (computed in numpy from the static shapes), so up- and
    down-sampling both sample only the two nearest source pixels, like torch (no antialias filter).
    """
    if x.ndim != 4:
        raise ValueError(f"expected NHWC images, got shape {x.shape}")
    h, w = x.shape[1:3]
    if (h, w) == tuple(size):
        return x
    return _resize_separable(x, _bilinear_matrix(h, size[0]), _bilinear_matrix(w, size[1]))


def resize_bilinear_tf1(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Resize NHWC ``x`` to ``size`` as TF 1.x ``tf.image.resize_bilinear(align_corners=False)`` (no half-pixel
    centres), the resize of the Inception graph ADM's evaluator uses."""
    if x.ndim != 4:
        raise ValueError(f"expected NHWC images, got shape {x.shape}")
    h, w = x.shape[1:3]
    if (h, w) == tuple(size):
        return x
    return _resize_separable(x, _bilinear_matrix(h, size[0], False), _bilinear_matrix(w, size[1], False))


def _resize_separable(x, mh, mw):
    """Apply [out_h, in_h] and [out_w, in_w] interpolation matrices to NHWC ``x``."""
    hi = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,nhwc->nowc", mh, x, precision=hi)
    return jnp.einsum("pw,nowc->nopc", mw, x, precision=hi)


class BasicConv2d(nn.Module):
    """torchvision BasicConv2d: conv (no bias) -> BatchNorm (eval, eps 1e-3) -> ReLU; torch-style padding (ph, pw)."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        ph, pw = self.padding
        x = nn.Conv(self.features, self.kernel_size, self.strides, padding=((ph, ph), (pw, pw)), use_bias=False,
                    precision=jax.lax.Precision.HIGHEST, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3_same(x):
    """F.avg_pool2d(k=3, s=1, p=1, count_include_pad=False): padded zeros are not counted (TF behaviour)."""
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


def _conv(features, k, s=1, p=0, name=None):
    k = (k, k) if isinstance(k, int) else k
    s = (s, s) if isinstance(s, int) else s
    p = (p, p) if isinstance(p, int) else p
    return BasicConv2d(features, k, s, p, name=name)


class FIDInceptionA(nn.Module):
    """pytorch-fid FIDInceptionA (Mixed_5b/c/d)."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = _conv(64, 1, name="branch1x1")(x)
        b5 = _conv(64, 5, p=2, name="branch5x5_2")(_conv(48, 1, name="branch5x5_1")(x))
        b3 = _conv(64, 1, name="branch3x3dbl_1")(x)
        b3 = _conv(96, 3, p=1, name="branch3x3dbl_3")(_conv(96, 3, p=1, name="branch3x3dbl_2")(b3))
        bp = _conv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """torchvision InceptionB (Mixed_6a), unchanged by pytorch-fid."""

    @nn.compact
    def __call__(self, x):
        b3 = _conv(384, 3, s=2, name="branch3x3")(x)
        bd = _conv(64, 1, name="branch3x3dbl_1")(x)
        bd = _conv(96, 3, s=2, name="branch3x3dbl_3")(_conv(96, 3, p=1, name="branch3x3dbl_2")(bd))
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionC(nn.Module):
    """pytorch-fid FIDInceptionC (Mixed_6b..6e)."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = _conv(192, 1, name="branch1x1")(x)
        b7 = _conv(c7, 1, name="branch7x7_1")(x)
        b7 = _conv(c7, (1, 7), p=(0, 3), name="branch7x7_2")(b7)
        b7 = _conv(192, (7, 1), p=(3, 0), name="branch7x7_3")(b7)
        bd = _conv(c7, 1, name="branch7x7dbl_1")(x)
        bd = _conv(c7, (7, 1), p=(3, 0), name="branch7x7dbl_2")(bd)
        bd = _conv(c7, (1, 7), p=(0, 3), name="branch7x7dbl_3")(bd)
        bd = _conv(c7, (7, 1), p=(3, 0), name="branch7x7dbl_4")(bd)
        bd = _conv(192, (1, 7), p=(0, 3), name="branch7x7dbl_5")(bd)
        bp = _conv(192, 1, name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """torchvision InceptionD (Mixed_7a), unchanged by pytorch-fid."""

    @nn.compact
    def __call__(self, x):
        b3 = _conv(320, 3, s=2, name="branch3x3_2")(_conv(192, 1, name="branch3x3_1")(x))
        b7 = _conv(192, 1, name="branch7x7x3_1")(x)
        b7 = _conv(192, (1, 7), p=(0, 3), name="branch7x7x3_2")(b7)
        b7 = _conv(192, (7, 1), p=(3, 0), name="branch7x7x3_3")(b7)
        b7 = _conv(192, 3, s=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionE(nn.Module):
    """pytorch-fid FIDInceptionE_1 (``pool='avg'``, Mixed_7b) and FIDInceptionE_2 (``pool='max'``, Mixed_7c)."""

    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        b1 = _conv(320, 1, name="branch1x1")(x)
        b3 = _conv(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate([_conv(384, (1, 3), p=(0, 1), name="branch3x3_2a")(b3),
                              _conv(384, (3, 1), p=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = _conv(384, 3, p=1, name="branch3x3dbl_2")(_conv(448, 1, name="branch3x3dbl_1")(x))
        bd = jnp.concatenate([_conv(384, (1, 3), p=(0, 1), name="branch3x3dbl_3a")(bd),
                              _conv(384, (3, 1), p=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.pool == "avg":
            pooled = _avg_pool_3x3_same(x)
        elif self.pool == "max":  # pytorch-fid's E_2 patch: max pool (padding with -inf) instead of average
            pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
        else:
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        bp = _conv(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """pytorch-fid ``InceptionV3(output_blocks=[3])``: NHWC float images in [0, 1] -> [N, 2048] pool3 features.

    ``resize_input``/``normalize_input`` mirror pytorch-fid's flags (bilinear resize to 299, then 2x - 1).
    ``heads=True`` returns a dict instead, ADM's evaluator's three outputs: ``pool`` [N, 2048]; ``spatial``
    [N, 17 * 17 * 7] (Mixed_6d's first 7 channels, which are its branch1x1 output, flattened in HWC order like
    ADM's ``mixed_6/conv:0[..., :7]``) and ``logits`` [N, 1008] = pool @ fc.weight.T (no bias, as ADM's
    ``softmax/logits/MatMul``).
    """

    resize_input: bool = True
    normalize_input: bool = True
    heads: bool = False

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected NHWC RGB images [N, H, W, 3], got shape {x.shape}")
        x = x.astype(jnp.float32)
        if self.resize_input:
            x = resize_bilinear_torch(x, (INPUT_SIZE, INPUT_SIZE))
        if self.normalize_input:
            x = 2.0 * x - 1.0
        x = _conv(32, 3, s=2, name="Conv2d_1a_3x3")(x)
        x = _conv(32, 3, name="Conv2d_2a_3x3")(x)
        x = _conv(64, 3, p=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = _conv(80, 1, name="Conv2d_3b_1x1")(x)
        x = _conv(192, 3, name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = FIDInceptionA(32, name="Mixed_5b")(x)
        x = FIDInceptionA(64, name="Mixed_5c")(x)
        x = FIDInceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = FIDInceptionC(128, name="Mixed_6b")(x)
        x = FIDInceptionC(160, name="Mixed_6c")(x)
        x = FIDInceptionC(160, name="Mixed_6d")(x)
        spatial = x[..., :SPATIAL_CHANNELS].reshape(x.shape[0], -1)
        x = FIDInceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = FIDInceptionE("avg", name="Mixed_7b")(x)
        x = FIDInceptionE("max", name="Mixed_7c")(x)
        pool = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d(1), flattened
        if not self.heads:
            return pool
        logits = nn.Dense(NUM_LOGITS, use_bias=False, precision=jax.lax.Precision.HIGHEST, name="fc")(pool)
        return {"pool": pool, "spatial": spatial, "logits": logits}


def feature_fn(module: InceptionV3, variables) -> Any:
    """A jitted ``images [N, H, W, 3] in [0, 1] -> features [N, 2048]`` closure over ``variables``."""
    apply = jax.jit(module.apply)
    return lambda images: apply(variables, images)
