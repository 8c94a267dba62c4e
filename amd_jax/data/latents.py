"""Class labels and (optionally) real VAE latents of a class-conditional latent-space task (ImageNet 256 with SiT).

DMD2/AMD need no real data except for the GAN head; a batch is then only labels, drawn uniformly over the classes.
With `data.real` (one .npz or .safetensors file, local or gs://, holding `latents` [N, H, W, C] NHWC,
already multiplied by the VAE's scaling factor as SiT's extract step writes them, and `labels` [N] int), each row
of a batch is a real latent of the row's label, for the GAN's 'real' side.

Batches are a pure function of (seed, step) and put each label on `group_size` consecutive rows (data/groups.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from amd_jax import tensor_files
from amd_jax.data import groups
from amd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LatentLabels:
    num_classes: int
    sample_shape: tuple[int, ...]  # one latent, NHWC without the batch: (H, W, C)
    seed: int = 0
    group_size: int = 1
    real: np.ndarray | None = None  # [N, H, W, C] float
    real_labels: np.ndarray | None = None  # [N] int

    def grouped(self, group_size: int) -> "LatentLabels":
        return dataclasses.replace(self, group_size=group_size)

    def global_batch(self, step: int, batch_size: int) -> dict:
        """{'cond': {'label': int32 [B]}, 'real': [B, H, W, C] (zeros [B, 1] without real latents)}."""
        k = groups.size(self.group_size, batch_size)
        rng = np.random.default_rng([self.seed, step])
        labels = np.repeat(rng.integers(0, self.num_classes, size=batch_size // k), k).astype(np.int32)
        if self.real is None:
            return {"cond": {"label": labels}, "real": np.zeros((batch_size, 1), np.float32)}
        return {"cond": {"label": labels}, "real": self.real[self._rows_of(rng, labels)].astype(np.float32)}

    def _rows_of(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        """Per row an independent uniform index of a real latent with that row's label."""
        by_label = np.argsort(self.real_labels, kind="stable")
        count = np.bincount(self.real_labels, minlength=self.num_classes)
        start = np.cumsum(count) - count
        return by_label[start[labels] + rng.integers(0, np.maximum(count[labels], 1))]


def read_real(path: str, sample_shape: tuple[int, ...], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(latents [N, H, W, C] float32, labels [N] int32) from `path`, checked against the task's shapes."""
    raw = tensor_files.read(path)
    if "latents" not in raw or "labels" not in raw:
        raise ConfigError(f"data.real={path!r} holds {sorted(raw)}; it needs 'latents' [N, H, W, C] (NHWC, scaled "
                          "by the VAE's scaling factor) and 'labels' [N].")
    latents, labels = np.asarray(raw["latents"], np.float32), np.asarray(raw["labels"]).astype(np.int32)
    if tuple(latents.shape[1:]) != tuple(sample_shape):
        hint = " (NCHW? transpose to NHWC)" if tuple(latents.shape[1:]) == tuple(np.roll(sample_shape, 1)) else ""
        raise ConfigError(f"data.real latents have shape {latents.shape[1:]}, the model needs {tuple(sample_shape)}"
                          f"{hint}.")
    if len(labels) != len(latents) or labels.min() < 0 or labels.max() >= num_classes:
        raise ConfigError(f"data.real labels: {len(labels)} labels for {len(latents)} latents, range "
                          f"[{labels.min()}, {labels.max()}]; need one label in [0, {num_classes}) per latent.")
    missing = np.setdiff1d(np.arange(num_classes), labels)
    if missing.size:
        raise ConfigError(f"data.real has no latent of {missing.size} classes (first: {missing[:5].tolist()}); the "
                          "GAN draws a real latent of each batch row's class, so every class needs at least one.")
    return latents, labels
