"""k-NN precision and recall (Kynkaanniemi et al. 2019, "Improved precision and recall"), NumPy, in row chunks.

Each sample set's manifold is the union of balls around its points, each ball reaching the point's k-th nearest
neighbour in the same set (index k of the sorted distances: index 0 is the point itself). Precision = fraction of
fake samples inside the real manifold; recall = fraction of real samples inside the fake manifold. Distances are
computed in the inputs' dtype (cast before calling for float64) and `chunk` query rows at a time, so memory stays
at `chunk x len(ref)`.
"""

from __future__ import annotations

import numpy as np


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)] as sqrt(|a|^2 + |b|^2 - 2 a.b), clipped at 0 before the root."""
    return np.sqrt(np.maximum(np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None] - 2 * a @ b.T, 0.0))


def radii(points: np.ndarray, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour within `points` (k=0: the point itself)."""
    return np.concatenate([np.sort(pairwise_distances(points[i:i + chunk], points), 1)[:, k]
                           for i in range(0, len(points), chunk)])


def inside(query: np.ndarray, ref: np.ndarray, ref_radii: np.ndarray, chunk: int = 1024) -> float:
    """Fraction of `query` points within some `ref` point's ball (`ref_radii`: one radius per ref point)."""
    return float(np.concatenate([np.any(pairwise_distances(query[i:i + chunk], ref) <= ref_radii[None], 1)
                                 for i in range(0, len(query), chunk)]).mean())


def recall(fake: np.ndarray, real: np.ndarray, k: int = 3, chunk: int = 1024) -> float:
    """Fraction of real points inside the fake manifold."""
    return inside(real, fake, radii(fake, k, chunk), chunk)


def precision_recall(fake: np.ndarray, real: np.ndarray, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """(fraction of fake points inside the real manifold, fraction of real points inside the fake manifold)."""
    return inside(fake, real, radii(real, k, chunk), chunk), recall(fake, real, k, chunk)
