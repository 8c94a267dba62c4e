"""Text-to-image evaluation suite: FID, reward / CLIP scores and per-prompt diversity of generated images.

What a user judges a distilled SDXL student by (DMD2 reports COCO FID and CLIP ViT-g score; AMD reports HPSv2):
  * one score per (image, prompt) from every scorer in ``eval.scorers`` ({name: weight folder or '' = off}, names of
    amd_jax.models.rewards.registry: hpsv2, pickscore, clip_l14, clip_g14), reported as ``<name>_mean`` and
    ``<name>_std``. Include at least one scorer that training did not use (docs/METHOD.md section 6).
  * ``fid``: Frechet distance between pytorch-fid Inception pool3 features of the images (clean-fid's "clean"
    resize to 299, ``amd_jax.metrics.fid``) and a reference set's statistics ``eval.fid_ref`` (an .npz of mu/sigma
    written by ``fid.save_stats`` or pytorch-fid, e.g. of COCO-10k images). Needs ``eval.inception`` (converted
    pytorch-fid weights, see amd_jax/tools/convert_inception.py). Empty paths = no FID.
  * ``diversity``: mean pairwise Inception-feature distance among the samples of one prompt (``groups``),
    averaged over prompts (needs eval.samples_per_prompt >= 2; the FID features are reused).
Images are uint8 [N, H, W, 3]; scorers see them back in [-1, 1] and apply their own resize / crop / mean-std.
"""

from __future__ import annotations

import functools
import logging

import jax
import numpy as np

from amd_jax import batching
from amd_jax.metrics import fid as fid_lib

log = logging.getLogger("amd_jax")


class TextToImageSuite:
    """Loads the scorers and Inception once (lazily); ``metrics(images, prompts, groups)`` evaluates a sample set."""

    def __init__(self, eval_cfg, batch_size: int = 16):
        self.scorer_paths = {k: v for k, v in dict(eval_cfg.get("scorers", {}) or {}).items() if v}  # '' = off
        self.inception_path = eval_cfg.get("inception", "")
        self.fid_ref = eval_cfg.get("fid_ref", "")
        if bool(self.inception_path) != bool(self.fid_ref):
            from amd_jax.errors import ConfigError

            raise ConfigError("FID needs both eval.inception (converted pytorch-fid weights) and eval.fid_ref "
                              "(reference mu/sigma .npz); set both or neither.")
        self.batch_size = int(batch_size)

    @functools.cached_property
    def scorers(self) -> dict:
        from amd_jax.models.rewards.registry import load_reward

        return {name: load_reward(name, path) for name, path in self.scorer_paths.items()}

    @functools.cached_property
    def _score_fns(self) -> dict:
        return {name: jax.jit(s.score) for name, s in self.scorers.items()}

    @functools.cached_property
    def inception_features(self):
        from amd_jax.models.inception import network as inception
        from amd_jax.models.inception import weights as inception_weights

        module, variables = inception_weights.load_inception(self.inception_path)
        return inception.feature_fn(module, variables)

    def scores(self, name: str, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """[N] float32 scores of scorer `name`, in fixed-size (zero-padded) batches: one compilation."""
        scorer, fn, b = self.scorers[name], self._score_fns[name], self.batch_size
        tokens = np.asarray(scorer.tokenize(list(prompts)))
        x = np.asarray(images, np.float32) / 127.5 - 1.0
        out = batching.map_fixed_batches(functools.partial(fn, scorer.params), (x, tokens), b, fill=(0, batching.EDGE))
        return out.astype(np.float32)

    def features(self, images: np.ndarray) -> np.ndarray:
        return fid_lib.extract_features(self.inception_features, images, self.batch_size, mode="clean")

    def metrics(self, images: np.ndarray, prompts: list[str], groups: np.ndarray | None = None) -> dict:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(prompts):
            raise ValueError(f"expected uint8 images [N, H, W, 3] and N prompts, got {images.shape} {images.dtype} "
                             f"and {len(prompts)} prompts")
        out = {}
        for name in self.scorer_paths:
            s = self.scores(name, images, prompts)
            out[f"{name}_mean"], out[f"{name}_std"] = float(s.mean()), float(s.std())
        if self.inception_path:
            feats = self.features(images)
            out["fid"] = fid_lib.frechet_distance(*fid_lib.feature_statistics(feats), *fid_lib.load_stats(self.fid_ref))
            if groups is not None and np.bincount(np.unique(groups, return_inverse=True)[1]).min() >= 2:
                out["diversity"] = fid_lib.diversity_by_group(feats, groups)[0]
        return out


def save_images(directory, images: np.ndarray, prompts: list[str]) -> None:
    """images/NNNNNN.png plus prompts.txt (line i = the prompt of image i), by process 0, local or gs://."""
    from etils import epath

    from amd_jax import writers

    if jax.process_index() != 0:
        return
    d = epath.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        (d / f"{i:06d}.png").write_bytes(writers.png_bytes(img))
    (d / "prompts.txt").write_text("\n".join(p.replace("\n", " ") for p in prompts) + "\n")
