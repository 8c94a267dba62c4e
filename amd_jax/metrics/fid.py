"""FID: Inception feature statistics, their .npz files, the Frechet distance, clean-fid resizing, diversity.

Matches pytorch-fid 0.3.0: features are ``InceptionV3([3])`` pool3 activations of images scaled to [0, 1]
(``amd_jax.models.inception``), ``mu = np.mean(act, 0)``, ``sigma = np.cov(act, rowvar=False)`` (float64) and
``frechet_distance`` is ``calculate_frechet_distance`` line for line. Stats files use pytorch-fid's layout
(``mu``, ``sigma`` in an .npz), so its precomputed reference stats load here and ours load there.

Preprocessing modes (``preprocess``):
  * ``"pytorch-fid"``: uint8 -> x / 255; the network resizes to 299 with torch-style bilinear (no antialias).
  * ``"clean"``: clean-fid's "clean" mode: each channel of the uint8 image is converted to float32 and resized
    to 299x299 by PIL bicubic (antialiased), clipped to [0, 255] (not re-quantised), then divided by 255; the
    network's own resize is then the identity. clean-fid feeds these pixels to its TF-exported Inception; here
    they go through pytorch-fid's port of the same 2015-12-05 graph, so scores are close to, but not bit-equal
    with, clean-fid's published numbers.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable

import numpy as np
from PIL import Image
from scipy import linalg

MODES = ("pytorch-fid", "clean")


# ----------------------------------------------------------------------------------------------- preprocessing


def _as_uint8_nhwc(images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images [N, H, W, 3] or [H, W, 3], got shape {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got dtype {x.dtype}")
    return x


def clean_resize(images, size: tuple[int, int] = (299, 299)) -> np.ndarray:
    """clean-fid's "clean" resize of uint8 RGB images to ``size`` = (height, width): float32 in [0, 255].

    Per channel: ``Image.fromarray(channel.astype(float32))`` (PIL mode "F"), ``.resize((w, h), BICUBIC)``,
    clip to [0, 255]; no rounding back to uint8. Accepts [H, W, 3] or [N, H, W, 3]; returns [N, h, w, 3].
    """
    x = _as_uint8_nhwc(images)
    h, w = size
    out = np.empty((x.shape[0], h, w, 3), np.float32)
    for i in range(x.shape[0]):
        for c in range(3):
            img = Image.fromarray(x[i, :, :, c].astype(np.float32))
            out[i, :, :, c] = np.asarray(img.resize((w, h), resample=Image.BICUBIC)).clip(0, 255)
    return out


def preprocess(images, mode: str = "pytorch-fid") -> np.ndarray:
    """uint8 RGB images [N, H, W, 3] -> float32 [0, 1] network input for the given FID ``mode`` (see module doc)."""
    if mode == "pytorch-fid":
        return _as_uint8_nhwc(images).astype(np.float32) / 255.0
    if mode == "clean":
        return clean_resize(images) / 255.0
    raise ValueError(f"unknown FID preprocessing mode {mode!r}; expected one of {MODES}")


def extract_features(feature_fn: Callable, images: np.ndarray | Iterable[np.ndarray], batch_size: int = 50,
                     mode: str = "pytorch-fid") -> np.ndarray:
    """Run ``feature_fn`` (e.g. ``inception.feature_fn(...)``) over uint8 images in fixed-size batches.

    ``images`` is one [N, H, W, 3] uint8 array or an iterable of such chunks (same H, W). A partial batch at the
    end of a chunk is zero-padded to ``batch_size`` (padding rows dropped) so the jitted function compiles once.
    Returns float32 [N, D].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from amd_jax import batching

    def features(b):
        return np.asarray(feature_fn(b), np.float32).reshape(batch_size, -1)

    chunks = [images] if isinstance(images, np.ndarray) else images
    feats = []
    for chunk in chunks:
        x = preprocess(chunk, mode)
        if x.shape[0]:
            feats.append(batching.map_fixed_batches(features, x, batch_size))
    if not feats:
        raise ValueError("no images given")
    return np.concatenate(feats)


# -------------------------------------------------------------------------------------------------- statistics


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-fid's ``mu = np.mean(act, axis=0)``, ``sigma = np.cov(act, rowvar=False)`` for act [N, D], N >= 2."""
    act = np.asarray(features)
    if act.ndim != 2 or act.shape[0] < 2:
        raise ValueError(f"expected features [N, D] with N >= 2, got shape {act.shape}")
    if not np.isfinite(act).all():
        raise ValueError("features contain NaN or Inf")
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def save_stats(path, mu, sigma, **meta) -> None:
    """Write ``mu``/``sigma`` (pytorch-fid's .npz keys) plus optional scalar/str metadata to ``path`` (local/gs://).

    Keep one file per reference set and preprocessing mode, e.g. ``coco30k_clean_299.npz``.
    """
    from amd_jax import tensor_files

    mu, sigma = np.asarray(mu), np.asarray(sigma)
    _check_stats(mu, sigma, str(path))
    tensor_files.write(path, {"mu": mu, "sigma": sigma, **meta}, compress=True)  # atomic: never a half file


def read_statistics_file(path, what: str, fix: str) -> dict[str, np.ndarray]:
    """The arrays of a reference-statistics .npz (FID stats, an ADM reference batch) the user provides, local or
    gs://. A missing file raises FileNotFoundError, one that cannot be read (truncated, corrupted: the zip's
    CRC-32) DamagedFileError; both name the file, `what` it is and `fix`. Nothing is moved or rebuilt."""
    from etils import epath

    from amd_jax import caches, tensor_files
    from amd_jax.errors import DamagedFileError

    p = epath.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {path}; {fix}")
    try:
        return tensor_files.read(p)
    except caches.UNREADABLE as e:
        raise DamagedFileError(f"{what} {path} cannot be read ({caches.describe(e)}): {fix}") from e


def load_stats(path) -> tuple[np.ndarray, np.ndarray]:
    """Read (mu, sigma) from an .npz written by ``save_stats`` or pytorch-fid (local path or gs://)."""
    arrays = read_statistics_file(path, "FID stats file", "compute it again with amd_jax.metrics.fid.save_stats, "
                                                          "or download it again.")
    if "mu" not in arrays or "sigma" not in arrays:
        raise ValueError(f"{path} has keys {sorted(arrays)}; expected 'mu' and 'sigma'")
    _check_stats(arrays["mu"], arrays["sigma"], str(path))
    return arrays["mu"], arrays["sigma"]


def _check_stats(mu, sigma, what):
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{what}: mu must be [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """pytorch-fid's calculate_frechet_distance: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)).

    If sqrtm(S1 S2) is not finite, eps is added to both diagonals (with a warning) and it is recomputed; a
    complex result whose diagonal has an imaginary part above 1e-3 raises ValueError, otherwise the real part
    is used.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"covariances have different shapes: {sigma1.shape} vs {sigma2.shape}")
    _check_stats(mu1, sigma1, "frechet_distance")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _sqrtm(a):
    """scipy.linalg.sqrtm without its singular-matrix warning (pytorch-fid passes disp=False, deprecated in 1.16)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(a)


def fid_from_features(features1, features2) -> float:
    """FID between two feature sets [N1, D], [N2, D]."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


# --------------------------------------------------------------------------------------------------- diversity


def mean_pairwise_distance(features) -> float:
    """Mean L2 distance over all unordered pairs i < j of rows of ``features`` [N, D] (N >= 2), in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"expected features [N, D] with N >= 2, got shape {f.shape}")
    n = f.shape[0]
    total = sum(np.linalg.norm(f[i + 1:] - f[i], axis=1).sum() for i in range(n - 1))
    return float(total / (n * (n - 1) / 2))


def diversity_by_group(features, groups) -> tuple[float, dict]:
    """Per prompt/class diversity: ``mean_pairwise_distance`` of the samples sharing a group label.

    ``groups`` [N] holds one label per feature row; every group needs >= 2 samples. Returns (mean over groups,
    {label: value}).
    """
    f = np.asarray(features)
    g = np.asarray(groups)
    if g.shape != (f.shape[0],):
        raise ValueError(f"groups must have shape ({f.shape[0]},), got {g.shape}")
    per: dict = {}
    for label in np.unique(g):
        rows = f[g == label]
        key = label.item()  # numpy scalar -> plain Python str/int for the dict key
        if rows.shape[0] < 2:
            raise ValueError(f"group {key!r} has {rows.shape[0]} sample(s); diversity needs >= 2 per group")
        per[key] = mean_pairwise_distance(rows)
    return float(np.mean(list(per.values()))), dict(per)
