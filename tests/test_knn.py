"""amd_jax/metrics/knn.py against a plain NumPy brute force (one point at a time, distances by np.linalg.norm), and
bit-for-bit against the two implementations it replaced (toy2d's knn_recall, digits' knn_precision_recall)."""

from __future__ import annotations

import numpy as np
import pytest

from amd_jax.metrics import knn


def _brute(fake, real, k):
    def kth(points):
        return np.array([np.sort(np.linalg.norm(points - p, axis=1))[k] for p in points])

    def frac_inside(query, ref):
        r = kth(ref)
        return np.mean([np.any(np.linalg.norm(ref - q, axis=1) <= r) for q in query])

    return frac_inside(fake, real), frac_inside(real, fake)


@pytest.mark.parametrize("k,chunk", [(1, 7), (3, 1024), (5, 50)])
def test_matches_brute_force(k, chunk):
    rng = np.random.default_rng(k)
    real = rng.standard_normal((120, 5))
    fake = 0.7 * rng.standard_normal((120, 5)) + 0.8  # overlapping, not identical: neither figure is 0 or 1
    want = _brute(fake, real, k)
    got = knn.precision_recall(fake, real, k=k, chunk=chunk)
    assert 0.05 < want[0] < 0.99 and 0.05 < want[1] < 0.99
    assert got == pytest.approx(want, abs=1e-12)
    assert knn.recall(fake, real, k=k, chunk=chunk) == got[1]


def test_pairwise_distances_are_norms():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((9, 4)), rng.standard_normal((6, 4))
    np.testing.assert_allclose(knn.pairwise_distances(a, b), np.linalg.norm(a[:, None] - b[None], axis=-1), atol=1e-12)
    assert np.all(knn.pairwise_distances(a, a).diagonal() < 1e-6)


# The replaced implementations, verbatim: the new one must give the very same floats.
def _old_pdist(a, b):
    return np.sqrt(np.maximum(np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None] - 2 * a @ b.T, 0.0))


def _old_toy2d_knn_recall(fake, real, k=3):
    radii = np.sort(_old_pdist(fake, fake), axis=1)[:, k]
    return float(np.mean(np.any(_old_pdist(real, fake) <= radii[None, :], axis=1)))


def _old_knn_precision_recall(fake, real, k=3, chunk=1024):
    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)

    def dists(a, b):
        return np.sqrt(np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T, 0.0))

    def radii(a):
        return np.concatenate([np.sort(dists(a[i:i + chunk], a), 1)[:, k] for i in range(0, len(a), chunk)])

    def inside(q, ref, r):
        return np.concatenate([np.any(dists(q[i:i + chunk], ref) <= r[None], 1) for i in range(0, len(q), chunk)])

    return float(inside(fake, real, radii(real)).mean()), float(inside(real, fake, radii(fake)).mean())


def test_same_floats_as_the_replaced_code():
    rng = np.random.default_rng(1)
    for n in (64, 512, 1000):  # toy2d: float32 2-D points, one class's samples
        fake, real = rng.standard_normal((n, 2)).astype(np.float32), rng.standard_normal((n, 2)).astype(np.float32)
        assert knn.recall(fake, real) == _old_toy2d_knn_recall(fake, real)
    fake, real = rng.standard_normal((2500, 16)), rng.standard_normal((2500, 16))  # digits: float64 features
    assert knn.precision_recall(fake, real) == _old_knn_precision_recall(fake, real)
