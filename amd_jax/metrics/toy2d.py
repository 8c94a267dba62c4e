"""Held-out metrics and the scatter plot of toy2d (NumPy; none of them is the training signal except the reward).

- precision:      fraction of samples within 3 std of a mode of their own class (real data: 1 - e^-4.5 = 0.989)
- mode_coverage:  fraction of the C*M modes that receive at least a quarter of their expected share of samples
- recall:         k-NN recall (Kynkaenniemi et al. 2019, k=3) of fresh real samples, per class
- swd:            sliced Wasserstein-1 distance to fresh real samples, per class, 128 projections
- mmd:            RBF-kernel MMD^2 (unbiased, bandwidth = 2 std) to fresh real samples, per class
- reward_mean:    the training reward (true log p(x | class)), for reference only
All per-class figures are averaged over classes.
"""

from __future__ import annotations

import numpy as np

from amd_jax.data.toy2d import Toy2D
from amd_jax.metrics import knn


def _dist_to_modes(data: Toy2D, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    mu = data.means()[labels]  # [N, M, 2]
    return np.linalg.norm(x[:, None, :] - mu, axis=-1)  # [N, M]


def precision(data: Toy2D, x, labels, radius_std: float = 3.0) -> float:
    return float(np.mean(_dist_to_modes(data, x, labels).min(1) < radius_std * data.std))


def mode_coverage(data: Toy2D, x, labels, radius_std: float = 3.0, min_share: float = 0.25) -> float:
    d = _dist_to_modes(data, x, labels)
    near, inside = d.argmin(1), d.min(1) < radius_std * data.std
    covered = 0
    for c in range(data.num_classes):
        n_c = np.sum(labels == c)
        for m in range(data.modes_per_class):
            hits = np.sum((labels == c) & (near == m) & inside)
            covered += hits >= min_share * n_c / data.modes_per_class
    return covered / (data.num_classes * data.modes_per_class)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, num_proj: int = 128, seed: int = 0) -> float:
    n = min(len(a), len(b))
    theta = np.random.default_rng(seed).standard_normal((a.shape[1], num_proj))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    pa, pb = np.sort((a[:n] @ theta), 0), np.sort((b[:n] @ theta), 0)
    return float(np.mean(np.abs(pa - pb)))


def mmd_rbf(a: np.ndarray, b: np.ndarray, bandwidth: float) -> float:
    k = lambda u, v: np.exp(-knn.pairwise_distances(u, v) ** 2 / (2 * bandwidth**2))
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    n, m = len(a), len(b)
    return float((kaa.sum() - n) / (n * (n - 1)) + (kbb.sum() - m) / (m * (m - 1)) - 2 * kab.mean())


def evaluate(data: Toy2D, x: np.ndarray, labels: np.ndarray, rewards: np.ndarray, seed: int = 12345) -> dict:
    rng = np.random.default_rng(seed)
    real = data.sample(rng, labels)
    per_class = {"recall": [], "swd": [], "mmd": []}
    for c in range(data.num_classes):
        f, r = x[labels == c], real[labels == c]
        per_class["recall"].append(knn.recall(f, r))
        per_class["swd"].append(sliced_wasserstein(f, r, seed=seed + c))
        per_class["mmd"].append(mmd_rbf(f, r, bandwidth=2 * data.std))
    out = {k: float(np.mean(v)) for k, v in per_class.items()}
    out.update(
        precision=precision(data, x, labels),
        mode_coverage=mode_coverage(data, x, labels),
        reward_mean=float(np.mean(rewards)),
        num_samples=int(len(x)),
    )
    return out


def scatter_png(data: Toy2D, x, labels, zone=None, title: str = "") -> np.ndarray:
    """RGB image of the samples coloured by class; zone-flagged samples drawn as black crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    colors = plt.cm.tab10(np.arange(data.num_classes))
    lim = data.radius + 1.5
    for c in range(data.num_classes):
        sel = labels == c
        if zone is not None:
            sel = sel & (zone < 0.5)
        ax.scatter(x[sel, 0], x[sel, 1], s=2, color=colors[c], alpha=0.5, label=f"class {c}")
    if zone is not None and np.any(zone > 0.5):
        z = zone > 0.5
        ax.scatter(x[z, 0], x[z, 1], s=6, marker="x", color="black", linewidths=0.6, label="flagged (zone)")
    for c in range(data.num_classes):
        for mu in data.means()[c]:
            ax.add_patch(plt.Circle(mu, 3 * data.std, fill=False, color=colors[c], lw=1.5))
    ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=6, markerscale=3)
    ax.set_title(title, fontsize=9)
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img
