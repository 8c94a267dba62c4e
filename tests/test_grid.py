"""amd_jax/metrics/grid.py: the sdxl and digits sample grids are byte-identical PNGs to what the two grid writers it
replaced drew (kept below verbatim as the reference), on fixed inputs with and without zone-flagged samples."""

from __future__ import annotations

import numpy as np
import pytest

from amd_jax.metrics import grid
from amd_jax.metrics.mnist import sample_grid
from amd_jax.writers import png_bytes


def _old_sdxl_image_grid(images: np.ndarray, cols: int = 8, zone=None) -> np.ndarray:
    n, h, w, _ = images.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    g = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = r * (h + 2), c * (w + 2)
        if zone is not None and zone[i]:
            g[y:y + h + 2, x:x + w + 2] = (255, 0, 0)
        g[y + 1:y + 1 + h, x + 1:x + 1 + w] = im
    return g


def _old_mnist_sample_grid(x, labels, num_classes=10, per_class=10, scale=2, zone=None) -> np.ndarray:
    x = np.clip((np.asarray(x)[..., 0] + 1.0) * 127.5, 0, 255).astype(np.uint8)
    labels = np.asarray(labels)
    h, w = x.shape[1] * scale, x.shape[2] * scale
    pad = 2
    g = np.full((num_classes * (h + pad) + pad, per_class * (w + pad) + pad, 3), 128, np.uint8)
    for c in range(num_classes):
        for j, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            y0, x0 = pad + c * (h + pad), pad + j * (w + pad)
            if zone is not None and zone[i] > 0.5:
                g[y0 - pad:y0 + h + pad, x0 - pad:x0 + w + pad] = (255, 0, 0)
            g[y0:y0 + h, x0:x0 + w] = np.kron(x[i], np.ones((scale, scale), np.uint8))[..., None]
    return g


@pytest.mark.parametrize("n,cols", [(1, 8), (5, 8), (12, 4), (13, 4)])
@pytest.mark.parametrize("with_zone", [False, True])
def test_sdxl_grid_png_is_unchanged(n, cols, with_zone):
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8)
    zone = rng.random(n) < 0.4 if with_zone else None
    want = png_bytes(_old_sdxl_image_grid(images, cols, zone))
    assert png_bytes(grid.image_grid(images, cols, framed=zone)) == want


@pytest.mark.parametrize("scale", [1, 3])
@pytest.mark.parametrize("with_zone", [False, True])
def test_digits_grid_png_is_unchanged(scale, with_zone):
    rng = np.random.default_rng(scale)
    x = rng.uniform(-1.2, 1.2, (40, 7, 7, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 40)  # uneven classes: some rows short, some full
    zone = rng.random(40) if with_zone else None  # thresholded at 0.5
    want = png_bytes(_old_mnist_sample_grid(x, labels, per_class=4, scale=scale, zone=zone))
    assert png_bytes(sample_grid(x, labels, per_class=4, scale=scale, zone=zone)) == want
    assert with_zone is False or (zone > 0.5).any()


def test_frame_is_red_around_flagged_tiles_only():
    tiles = np.zeros((3, 2, 2, 3), np.uint8)
    g = grid.image_grid(tiles, 3, framed=[False, True, False])
    assert g.shape == (4, 12, 3)
    assert (g[0, 4:8] == grid.FRAME).all() and (g[0, 0:4] == 255).all() and (g[1:3, 5:7] == 0).all()
