"""The one image grid of eval samples: RGB uint8 tiles laid out in cells, zone-flagged samples framed in red.

Tile i goes to cell (row, col): its top-left pixel is at `margin + row * (h + gap)`, `margin + col * (w + gap)`;
the whole grid is `margin` wide on every side and `gap` between tiles, filled with `background`. A framed tile gets
a red border `margin` wide around it (drawn before the tile, so it never covers a neighbour).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

FRAME = (255, 0, 0)  # Forbidden-Zone samples


def image_grid(tiles: np.ndarray, cols: int, *, rows: int | None = None, cells: Sequence[tuple[int, int]] | None = None,
               margin: int = 1, gap: int = 2, background: int = 255, framed=None) -> np.ndarray:
    """`tiles` [N, h, w, 3] uint8 in a `rows` x `cols` grid at `cells` [(row, col)] (framed[i] true: red frame).

    Without `cells` the tiles go row-major and `cols` shrinks to N when N is smaller (no empty columns); `rows`
    defaults to as many as the tiles fill.
    """
    n, h, w, _ = tiles.shape
    if cells is None:
        cols = max(1, min(cols, n))
        cells = [divmod(i, cols) for i in range(n)]
    rows = -(-n // cols) if rows is None else rows
    grid = np.full((2 * margin + rows * (h + gap) - gap, 2 * margin + cols * (w + gap) - gap, 3), background, np.uint8)
    for i, (r, c) in enumerate(cells):
        y, x = margin + r * (h + gap), margin + c * (w + gap)
        if framed is not None and framed[i]:
            grid[y - margin:y + h + margin, x - margin:x + w + margin] = FRAME
        grid[y:y + h, x:x + w] = tiles[i]
    return grid
