"""ADM's held-out ImageNet metrics (openai/guided-diffusion evaluations/evaluator.py) on the project's Inception.

Against a reference batch ADM publishes (e.g. ``VIRTUAL_imagenet256_labeled.npz``: ``arr_0`` uint8 images
[10000, 256, 256, 3], ``mu``/``sigma`` of their pool3 features, ``mu_s``/``sigma_s`` of their spatial features),
:class:`ImageNetEvaluator` computes, as ADM does:

* ``fid``: Frechet distance of the samples' pool3 statistics to the file's ``mu``/``sigma`` (fid.frechet_distance,
  the same TTUR formula); ``sfid`` the same on the spatial features (``mixed_6/conv`` first 7 channels, 2023-d).
* ``inception_score``: softmax of the 1008 unbiased logits (pool3 @ W, no bias), consecutive splits of 5000
  samples (the last one shorter if N is not a multiple), ``exp(mean_i KL(p(y|x_i) || mean p(y)))`` per split,
  averaged over splits (no standard deviation).
* ``precision``/``recall``: Kynkaanniemi et al. with k = 3 on pool3 features (knn.py): the reference features
  are those of ``arr_0``, computed here once.

What differs from ADM's TF evaluator: the network is pytorch-fid's port of the same 2015-12-05 Inception graph
(the same weights; its FID blocks reproduce TF's padding-free average pools and the last block's max pool) run in
Flax at float32 / HIGHEST precision instead of TF's kernels; the graph's input transform is reproduced here
(TF 1.x bilinear resize to 299 without half-pixel centres, then ``(x - 128) / 128``), not pytorch-fid's (torch
bilinear, ``x / 127.5 - 1``). The softmax is taken in float64 through log-softmax (ADM: float32 softmax, then
``log``). ADM's k-NN distances are squared and computed in float16 first (float32 only if that overflows); knn.py
uses float32 Euclidean distances (the same order, so the same balls up to rounding). Expect agreement to
rounding, not bit-equality, with numbers from ADM's script; cross-check with it via ``save_sample_batch``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import log_softmax

from amd_jax import batching
from amd_jax.errors import DamagedFileError
from amd_jax.metrics import fid, knn
from amd_jax.models.inception import network as inception
from amd_jax.models.inception import weights as inception_weights

IS_SPLIT_SIZE = 5000
KNN_K = 3  # ADM's ManifoldEstimator nhood_sizes=(3,)
SPATIAL_DIM = 17 * 17 * inception.SPATIAL_CHANNELS
_REF_SHAPES = {"mu": (inception.FEATURE_DIM,), "sigma": (inception.FEATURE_DIM,) * 2, "mu_s": (SPATIAL_DIM,),
               "sigma_s": (SPATIAL_DIM,) * 2}
_ADM_HINT = ("ADM's reference batches (e.g. VIRTUAL_imagenet256_labeled.npz, linked from openai/guided-diffusion "
             "evaluations/README.md) have arr_0 (uint8 images [N, H, W, 3]), mu, sigma, mu_s and sigma_s")


@dataclasses.dataclass(frozen=True)
class Reference:
    """An ADM reference batch: its images and the pool3 (mu, sigma) and spatial (mu_s, sigma_s) statistics."""

    images: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray
    sigma_s: np.ndarray


def load_reference(path) -> Reference:
    """Read and validate an ADM reference .npz (local or gs://); errors name the problem and the file ADM ships."""
    arrays = fid.read_statistics_file(path, "ImageNet reference batch", f"download it again. {_ADM_HINT}.")
    missing = sorted({"arr_0", *_REF_SHAPES} - set(arrays))
    if missing:
        raise DamagedFileError(f"reference batch {path} lacks {missing} (has {sorted(arrays)}). {_ADM_HINT}.")
    problems = [f"{k} has shape {arrays[k].shape}, expected {s}" if arrays[k].shape != s else f"{k} is not finite"
                for k, s in _REF_SHAPES.items() if arrays[k].shape != s or not np.isfinite(arrays[k]).all()]
    images = arrays["arr_0"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) <= KNN_K:
        problems.append(f"arr_0 must be uint8 images [N > {KNN_K}, H, W, 3], got {images.dtype} {images.shape}")
    if problems:
        raise DamagedFileError(f"reference batch {path}: " + "; ".join(problems) + f". {_ADM_HINT}.")
    return Reference(images, *(arrays[k] for k in _REF_SHAPES))


def inception_score(logits: np.ndarray, split_size: int = IS_SPLIT_SIZE) -> float:
    """ADM's Inception Score of logits [N, C]: mean over consecutive splits of exp(E_x KL(p(y|x) || p(y)))."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"expected logits [N, C] with N >= 1, got shape {logits.shape}")
    scores = []
    for i in range(0, len(logits), split_size):
        log_p = log_softmax(logits[i:i + split_size], axis=1)
        p = np.exp(log_p)
        log_marginal = np.log(np.mean(p, axis=0, keepdims=True))
        scores.append(np.exp(np.mean(np.sum(p * (log_p - log_marginal), axis=1))))
    return float(np.mean(scores))


def precision_recall(sample_pool: np.ndarray, ref_pool: np.ndarray) -> tuple[float, float]:
    """ADM's compute_prec_recall: (fraction of samples inside the reference manifold, fraction of references inside
    the sample manifold), balls to each point's KNN_K-th neighbour in its own set."""
    if len(sample_pool) <= KNN_K or len(ref_pool) <= KNN_K:
        raise ValueError(f"precision/recall need more than {KNN_K} samples and references, got {len(sample_pool)} "
                         f"and {len(ref_pool)}")
    return knn.precision_recall(np.asarray(sample_pool, np.float32), np.asarray(ref_pool, np.float32), k=KNN_K)


def to_uint8(images) -> np.ndarray:
    """uint8 [N, H, W, 3] as is; floats in [-1, 1] as ADM's sampler saves them: ((x + 1) * 127.5) clipped, truncated."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected images [N, H, W, 3], got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected uint8 or float images in [-1, 1], got dtype {x.dtype}")
    return np.clip((x.astype(np.float32) + 1.0) * 127.5, 0, 255).astype(np.uint8)


def adm_input(images_uint8: jax.Array) -> jax.Array:
    """The 2015-12-05 graph's own input transform on [N, H, W, 3] pixels 0..255: TF1 bilinear to 299, (x-128)/128."""
    x = inception.resize_bilinear_tf1(images_uint8.astype(jnp.float32), (inception.INPUT_SIZE,) * 2)
    return (x - 128.0) / 128.0


def save_sample_batch(path, images, labels=None) -> None:
    """Write samples in ADM's sample-batch layout (``arr_0`` uint8 images, ``arr_1`` labels) for its evaluator."""
    from amd_jax import tensor_files

    arrays = {"arr_0": to_uint8(images)}
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels)
    tensor_files.write(path, arrays)


@functools.partial(jax.jit, static_argnums=0)
def _heads(module, variables, images_uint8):
    """The Inception's {pool, spatial, logits} of uint8 images through the graph's own input transform."""
    return module.apply(variables, adm_input(images_uint8))


class ImageNetEvaluator:
    """ADM's FID, sFID, Inception Score and precision/recall of samples against one reference batch.

    ``ref_npz_path``: ADM's reference .npz (local or gs://); ``inception_path``: pytorch-fid's Inception weights
    converted by ``amd_jax.tools.convert_inception`` (must include ``fc.weight``, which the converter keeps).
    Both are read on construction; the reference images' features on the first ``metrics`` call.
    """

    def __init__(self, ref_npz_path, inception_path, batch_size: int = 100):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.reference = load_reference(ref_npz_path)
        self._module, self._variables = inception_weights.load_inception(
            inception_path, inception.InceptionV3(resize_input=False, normalize_input=False, heads=True))
        self.batch_size = batch_size

    def activations(self, images: np.ndarray | Iterable[np.ndarray]) -> dict[str, np.ndarray]:
        """{pool [N, 2048], spatial [N, 2023], logits [N, 1008]} of uint8 or [-1, 1] float images (or chunks)."""
        chunks = [images] if isinstance(images, np.ndarray) or hasattr(images, "shape") else images
        apply = functools.partial(_heads, self._module, self._variables)
        outs = [batching.map_fixed_batches(apply, to_uint8(c), self.batch_size) for c in chunks if len(c)]
        if not outs:
            raise ValueError("no images given")
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    @functools.cached_property
    def reference_pool(self) -> np.ndarray:
        """pool3 features of the reference images (precision/recall's real manifold)."""
        return self.activations(self.reference.images)["pool"]

    def metrics(self, images: np.ndarray | Iterable[np.ndarray]) -> dict[str, float]:
        """{fid, sfid, inception_score, precision, recall} of the samples (ADM uses 50,000) vs the reference."""
        acts = self.activations(images)
        ref = self.reference
        precision, recall = precision_recall(acts["pool"], self.reference_pool)
        return {
            "fid": fid.frechet_distance(*fid.feature_statistics(acts["pool"]), ref.mu, ref.sigma),
            "sfid": fid.frechet_distance(*fid.feature_statistics(acts["spatial"]), ref.mu_s, ref.sigma_s),
            "inception_score": inception_score(acts["logits"]),
            "precision": precision,
            "recall": recall,
        }
