"""A video reward from an image-text scorer (our choice; docs/METHOD.md "Video rewards"): the scorer's score of
K evenly spaced decoded frames against the caption, averaged, plus `temporal_weight` times a temporal-smoothness
term (VBench's temporal-flickering form: 1 - the mean absolute difference of consecutive frames, on [0, 1]).

Videos are [B, T, H, W, 3] in [-1, 1]; the scorer is any text-to-image scorer of registry.py
(`score(params, images [N, H, W, 3] in [-1, 1], tokens [N, L]) -> [N]`), so HPSv2 / PickScore / CLIP score a video
frame by frame. Reductions in float32.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def frame_indices(num_frames: int, k: int) -> np.ndarray:
    """min(k, num_frames) distinct frame indices, evenly spaced, first and last included (k = 1: the middle)."""
    if k == 1 or num_frames == 1:
        return np.asarray([num_frames // 2])
    return np.unique(np.round(np.linspace(0, num_frames - 1, min(k, num_frames))).astype(int))


def temporal_smoothness(video: jax.Array) -> jax.Array:
    """[B] in [0, 1]: 1 - mean |frame_{t+1} - frame_t| / 2 over pixels and frame pairs (frames in [-1, 1]); 1 for a
    still video. It rewards stillness as much as smoothness, so its weight must stay small against the frames'."""
    v = video.astype(jnp.float32)
    if v.shape[1] < 2:
        return jnp.ones((v.shape[0],), jnp.float32)
    return 1.0 - 0.5 * jnp.mean(jnp.abs(v[:, 1:] - v[:, :-1]), axis=(1, 2, 3, 4))


def video_reward(score: Callable, params, video: jax.Array, tokens: jax.Array, frames: int,
                 temporal_weight: float = 0.0) -> jax.Array:
    """[B] float32: the mean of `score` over `frames` evenly spaced frames of each video (one call on B*K frames,
    each with its video's tokens) + temporal_weight * temporal_smoothness."""
    b, t = video.shape[:2]
    idx = frame_indices(t, frames)
    k = len(idx)
    images = video[:, idx].reshape((b * k,) + video.shape[2:])
    per_frame = score(params, images, jnp.repeat(tokens, k, axis=0)).astype(jnp.float32).reshape(b, k)
    out = jnp.mean(per_frame, axis=1)
    return out + temporal_weight * temporal_smoothness(video) if temporal_weight else out
