"""VBench's video dimensions that run in JAX, each written from VBench's own code (the `vbench` 0.1.5 wheel, files
named below), on uint8 RGB videos [T, H, W, 3] with every frame used (VBench's `load_video` reads all frames).

* subject consistency (vbench/subject_consistency.py): DINO ViT-B/16 features f_t of every frame (the CLS token
  after the last LayerNorm, which torch.hub's dino_vitb16 returns; here transformers' Flax ViT on the
  facebook/dino-vitb16 folder), unit-normalised; per frame t >= 1 the term
  (max(0, cos(f_{t-1}, f_t)) + max(0, cos(f_0, f_t))) / 2; a video's score is the mean of its T - 1 terms and the
  dimension's score is the sum of all videos' terms over their count (`sim / cnt`: longer videos weigh more).
  Preprocessing (vbench/utils.py `dino_transform(224)`): torchvision `Resize(224, antialias=False)` of the float
  frames (bilinear, shortest side to 224, the other int(224 * long / short), NO crop), / 255, ImageNet mean/std.
  The non-square input gets DINO's positional-embedding interpolation (facebookresearch/dino vision_transformer.py
  `interpolate_pos_encoding`: bicubic with scale_factor (n + 0.1) / sqrt(N), so even an unchanged side is
  resampled; `pos_mode="dino"`); `pos_mode="hf"` is transformers' size-based variant (checked against its
  PyTorch ViTModel in tests/test_vbench.py).
* background consistency (vbench/background_consistency.py): the same formula on CLIP ViT-B/32 image embeddings
  (`encode_image`: the projected, then normalised, CLS token; here models/rewards/clip_scorers.py's Flax CLIP on
  an openai/clip-vit-base-patch32 folder). Preprocessing `clip_transform(224)`: `Resize(224, BICUBIC,
  antialias=False)` (torch's bicubic, a = -0.75, not PIL's), `CenterCrop(224)` (offset round((L - 224) / 2)),
  / 255, OpenAI mean/std.
* temporal flickering (vbench/temporal_flickering.py `cal_score`): (255 - mean_t MAE(frame_t, frame_{t+1})) / 255,
  the MAE over all pixels and channels of the 0-255 frames in float32. Difference: VBench runs it only on videos
  its static filter (a RAFT pass in its repository, not in the wheel) kept as static; here it runs on the videos
  given, so on moving videos it measures motion as well as flicker.
* aesthetic quality (vbench/aesthetic_quality.py): the LAION aesthetic predictor, a Linear(768, 1)
  (sa_0_4_vit_l_14_linear.pth, converted by amd_jax/tools/convert_aesthetic.py) on the unit-normalised CLIP
  ViT-L/14 image embeddings (clip_transform(224) as above), divided by 10, averaged over the frames; the dimension's
  score is the mean over videos.
* dynamic degree (vbench/dynamic_degree.py): VBench runs RAFT (raft-things) on consecutive frames sampled every
  max(1, round(fps / 8)) frames; we have no RAFT in JAX and provide NO flow network. `dynamic_degree(flows, ...)`
  is VBench's decision on flows the caller brings: per frame pair the mean of the largest int(0.05 H W) flow
  magnitudes (`get_score`), a video moves when at least round(4 T / 16) pairs (Python's round, T = the sampled
  frames) exceed 6 min(H, W) / 256 (`set_params`, `check_move`; H, W of the frames, the flow as RAFT returns it).

Temporal flickering's and aesthetic quality's dimension scores are the mean over videos, as VBench's.
Other differences from VBench, all small: VBench decodes .mp4 with decord, we read the GIF / .npz a Wan run writes
(amd_jax/tools/vbench.py; a colour GIF's palette is not exact); openai `clip.load` on a GPU runs CLIP in float16,
we run float32; DINO's own LayerNorm eps is 1e-6, here the folder's config.json decides; frames go through the
networks in batches, not one by one (the same arithmetic).

Resizes are torch's `F.interpolate` (antialias=False, align_corners=False: what torchvision's tensor `Resize`
calls) as separable matrices built in NumPy and applied with jnp; networks run in jnp float32, reductions in NumPy
float64 on float32 features.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from amd_jax.models.rewards.preprocess import OPENAI_MEAN, OPENAI_STD  # CLIP's, one definition

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE = 224  # VBench's n_px for DINO and CLIP


# ----------------------------------------------------------------------------------------- formulas (NumPy)
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def consistency_terms(features) -> np.ndarray:
    """[T - 1] VBench terms of frames 1..T-1: (max(0, cos(prev, t)) + max(0, cos(first, t))) / 2."""
    f = _unit(features)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"consistency needs features [T >= 2, D], got shape {np.shape(features)}")
    prev = np.maximum(0.0, np.sum(f[:-1] * f[1:], axis=-1))
    first = np.maximum(0.0, f[1:] @ f[0])
    return (prev + first) / 2.0


def consistency(features) -> float:
    """One video's subject (DINO features) or background (CLIP features) consistency: the mean of its terms."""
    return float(np.mean(consistency_terms(features)))


subject_consistency = background_consistency = consistency


def consistency_aggregate(per_video_terms) -> float:
    """VBench's dimension score over videos: all terms summed over their count (sim / cnt)."""
    terms = [np.asarray(t, np.float64) for t in per_video_terms]
    return float(sum(t.sum() for t in terms) / sum(t.size for t in terms))


def temporal_flickering(frames) -> float:
    """(255 - mean over consecutive pairs of the MAE of the 0-255 frames) / 255; 1 for a static video."""
    f = np.asarray(frames, np.float32)
    if len(f) < 2:
        raise ValueError(f"temporal flickering needs >= 2 frames, got shape {f.shape}")
    mae = [np.mean(np.abs(f[i] - f[i + 1])) for i in range(len(f) - 1)]
    return (255.0 - float(np.mean(mae))) / 255.0


def aesthetic_scores(clip_features, weight, bias) -> np.ndarray:
    """[T] LAION aesthetic score / 10 of each frame: Linear(normalize(clip_l14_features)) / 10."""
    f = _unit(clip_features)
    w = np.asarray(weight, np.float64).reshape(1, -1)
    return (f @ w[0] + float(np.asarray(bias).reshape(-1)[0])) / 10.0


def aesthetic_quality(clip_features, weight, bias) -> float:
    """One video's aesthetic quality: the mean of its frames' scores."""
    return float(np.mean(aesthetic_scores(clip_features, weight, bias)))


def dynamic_frames(num_frames: int, fps: float) -> np.ndarray:
    """The frame indices VBench gives RAFT: every max(1, round(fps / 8))-th frame."""
    return np.arange(0, num_frames, max(1, round(fps / 8)))


def flow_score(flow) -> float:
    """VBench's `get_score`: the mean of the largest int(0.05 H W) magnitudes of a flow [H, W, 2]."""
    rad = np.sqrt(np.square(flow[..., 0]) + np.square(flow[..., 1])).reshape(-1)
    return float(np.mean(np.sort(rad)[::-1][:int(rad.size * 0.05)]))


def dynamic_degree(flows, frame_hw: tuple[int, int]) -> bool:
    """VBench's `check_move` on flows [T - 1, H, W, 2] (x, y) of the T sampled frames of size `frame_hw`: True when
    at least round(4 T / 16) frame pairs score above 6 min(H, W) / 256. No flow network is provided here."""
    thres, count_num = 6.0 * (min(frame_hw) / 256.0), round(4 * ((len(flows) + 1) / 16.0))
    count = 0
    for flow in flows:
        count += flow_score(flow) > thres
        if count >= count_num:
            return True
    return False


# ------------------------------------------------------------------------ torch's resize as matrices (NumPy)
def resize_matrix(n_in: int, n_out: int, mode: str, scale_factor: float | None = None) -> np.ndarray:
    """[n_out, n_in] float64: torch F.interpolate along one axis (align_corners=False, antialias=False).

    mode 'bilinear' or 'bicubic' (a = -0.75, edge taps clamped); `scale_factor` as F.interpolate's (the source
    coordinate is (dst + 0.5) / scale_factor - 0.5), else in / out."""
    step = 1.0 / scale_factor if scale_factor else n_in / n_out
    m = np.zeros((n_out, n_in))
    for j in range(n_out):
        src = step * (j + 0.5) - 0.5
        if mode == "bilinear":
            src = max(src, 0.0)
            i0 = int(src)
            i1 = min(i0 + 1, n_in - 1)
            m[j, i0] += 1.0 - (src - i0)
            m[j, i1] += src - i0
        elif mode == "bicubic":
            i0 = math.floor(src)
            t, a = src - i0, -0.75
            near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # |x| <= 1
            far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 < |x| < 2
            for k, w in zip(range(-1, 3), (far(t + 1), near(t), near(1 - t), far(2 - t))):
                m[j, min(max(i0 + k, 0), n_in - 1)] += w
        else:
            raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    return m


def resized_size(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision Resize(size): the shortest side to `size`, the other int(size * long / short)."""
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def vbench_transform(frames, size: int = SIZE, kind: str = "clip") -> jax.Array:
    """uint8 (or 0-255 float) frames [T, H, W, 3] -> the model input [T, h, w, 3] float32 of VBench's
    `clip_transform(size)` (kind='clip': bicubic, centre crop, OpenAI mean/std) or `dino_transform(size)`
    (kind='dino': bilinear, no crop, ImageNet mean/std)."""
    t, h, w, _ = np.shape(frames)
    rh, rw = resized_size(h, w, size)
    mode = "bicubic" if kind == "clip" else "bilinear"
    mh, mw = resize_matrix(h, rh, mode), resize_matrix(w, rw, mode)
    if kind == "clip":
        top, left = int(round((rh - size) / 2.0)), int(round((rw - size) / 2.0))
        mh, mw = mh[top:top + size], mw[left:left + size]
    mean, std = (OPENAI_MEAN, OPENAI_STD) if kind == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    return _apply_transform(jnp.asarray(frames, jnp.float32), jnp.asarray(mh, jnp.float32),
                            jnp.asarray(mw, jnp.float32), jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32))


@jax.jit
def _apply_transform(x, mh, mw, mean, std):
    x = jnp.einsum("oh,thwc->towc", mh, x, precision="highest")
    x = jnp.einsum("pw,towc->topc", mw, x, precision="highest")
    return (x / 255.0 - mean) / std


# ----------------------------------------------------------------------------------------------- DINO ViT
def interpolate_pos_embed(pos, grid: tuple[int, int], mode: str = "dino") -> np.ndarray:
    """[1, 1 + N, D] ViT position embeddings -> [1, 1 + gh gw, D] for a gh x gw patch grid, torch bicubic.
    mode 'dino': facebookresearch/dino's scale_factor (g + 0.1) / sqrt(N) (always resampled unless the input is
    square with N patches); 'hf': transformers' ViT (size=(gh, gw))."""
    pos = np.asarray(pos, np.float64)
    n = pos.shape[1] - 1
    side = int(math.isqrt(n))
    gh, gw = grid
    if gh * gw == n and gh == gw:
        return pos.astype(np.float32)
    scale = (lambda g: (g + 0.1) / side) if mode == "dino" else (lambda g: None)
    mh, mw = resize_matrix(side, gh, "bicubic", scale(gh)), resize_matrix(side, gw, "bicubic", scale(gw))
    grid_pos = np.einsum("oh,pw,hwd->opd", mh, mw, pos[0, 1:].reshape(side, side, -1))
    return np.concatenate([pos[:, :1], grid_pos.reshape(1, gh * gw, -1)], axis=1).astype(np.float32)


@dataclasses.dataclass(eq=False)
class DinoViT:
    """A ViT feature extractor on transformers' Flax ViT modules (params in FlaxViTModel's tree, no pooler):
    `features(params, pixels)` -> the CLS token after the final LayerNorm [B, D], at any input size (the position
    embeddings interpolated for the patch grid)."""

    config: Any
    params: Any
    pos_mode: str = "dino"

    def features(self, params, pixels) -> jax.Array:
        p = self.config.patch_size
        grid = (pixels.shape[1] // p, pixels.shape[2] // p)
        pos = interpolate_pos_embed(np.asarray(params["embeddings"]["position_embeddings"]), grid, self.pos_mode)
        return self._forward(params, jnp.asarray(pixels, jnp.float32), jnp.asarray(pos))

    @functools.cached_property
    def _forward(self):
        return jax.jit(functools.partial(_dino_forward, self.config))

    def frame_features(self, frames, size: int = SIZE) -> np.ndarray:
        """[T, D] float32 features of uint8 frames [T, H, W, 3] through VBench's dino_transform(size)."""
        return np.asarray(self.features(self.params, vbench_transform(frames, size, "dino")))


def _dino_forward(config, params, pixels, pos):
    from flax import linen as nn
    from transformers.models.vit.modeling_flax_vit import FlaxViTEncoder, FlaxViTPatchEmbeddings

    emb = params["embeddings"]
    x = FlaxViTPatchEmbeddings(config).apply({"params": emb["patch_embeddings"]}, pixels)
    cls = jnp.broadcast_to(emb["cls_token"], (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + pos
    x = FlaxViTEncoder(config).apply({"params": params["encoder"]}, x, deterministic=True)[0]
    x = nn.LayerNorm(epsilon=config.layer_norm_eps).apply({"params": params["layernorm"]}, x)
    return x[:, 0].astype(jnp.float32)


def clip_frame_features(scorer, frames, size: int = 0) -> np.ndarray:
    """[T, E] float32 image embeddings (projected, not normalised) of uint8 frames [T, H, W, 3] through VBench's
    clip_transform(size) (0: the CLIP's own image size, 224 for ViT-B/32 and ViT-L/14 as in VBench) and a
    models/rewards CLIPScorer's vision tower."""
    size = size or scorer.config.vision_config.image_size
    return np.asarray(_jitted_pixel_features(scorer)(scorer.params, vbench_transform(frames, size, "clip")))


@functools.lru_cache(maxsize=8)
def _jitted_pixel_features(scorer):
    return jax.jit(scorer.pixel_features)


# ----------------------------------------------------------------------------------------------- loading
_DINO_WEIGHTS = ("model.safetensors", "model.npz", "flax_model.msgpack")


def dino_config(path):
    """The ViTConfig of a facebook/dino-vitb16-layout folder, read from config.json alone (ConfigError naming the
    problem when the folder is missing, has no config.json or holds another kind of model)."""
    from transformers import ViTConfig

    from amd_jax.errors import ConfigError
    from amd_jax.models.rewards import weights as W

    folder = W.as_path(path)
    if not (folder / "config.json").exists():
        raise ConfigError(f"--dino={path}: no config.json there; give a folder in the Hugging Face layout of "
                          f"facebook/dino-vitb16 (config.json + model.safetensors or flax_model.msgpack).")
    raw = W.read_json(folder / "config.json")
    arch = raw.get("architectures") or ["ViTModel"]
    if raw.get("model_type") != "vit" or arch != ["ViTModel"]:
        raise ConfigError(f"--dino={path}: config.json is a {raw.get('model_type')!r} model ({arch}), not a bare "
                          f"ViT; give the facebook/dino-vitb16 folder (model_type 'vit', ViTModel).")
    if not any((folder / n).exists() for n in _DINO_WEIGHTS):
        raise ConfigError(f"--dino={path}: no weights; expected one of {list(_DINO_WEIGHTS)} (convert a "
                          f"pytorch_model.bin to model.safetensors first).")
    return ViTConfig.from_dict(raw)


def abstract_dino_params(config):
    """eval_shape of FlaxViTModule(add_pooling_layer=False).init: the expected parameter tree."""
    from transformers.models.vit.modeling_flax_vit import FlaxViTModule

    px = jnp.zeros((1, config.image_size, config.image_size, config.num_channels), jnp.float32)
    init = functools.partial(FlaxViTModule(config, add_pooling_layer=False).init, jax.random.PRNGKey(0), px)
    return jax.eval_shape(init)["params"]


def load_dino(path, pos_mode: str = "dino") -> DinoViT:
    """A DinoViT from a folder in facebook/dino-vitb16's layout: config.json and model.safetensors (PyTorch names,
    or the same keys in model.npz) or flax_model.msgpack (transformers' Flax tree). Torch-free; every missing,
    unexpected or mis-shaped tensor is named (models/rewards/weights.py's checker); the pooler is not used and
    its tensors are dropped."""
    from flax import serialization
    from flax.traverse_util import flatten_dict, unflatten_dict

    from amd_jax.models.rewards import weights as W

    config = dino_config(path)
    folder = W.as_path(path)
    abstract = abstract_dino_params(config)
    weights = next(folder / n for n in _DINO_WEIGHTS if (folder / n).exists())
    if weights.name.endswith(".msgpack"):
        tree = serialization.msgpack_restore(weights.read_bytes())
        tree = tree.get("params", tree)
        params = unflatten_dict({k: np.asarray(v, np.float32) for k, v in flatten_dict(tree).items()
                                 if k[0] != "pooler"})
        W.check_tree(params, abstract, f"DINO ViT ({weights.name})")
    else:
        state = {k: v for k, v in W.load_tensors(weights).items() if not k.startswith("pooler.")}
        params = W.convert_hf_state_dict(state, abstract, what="DINO ViT")
    return DinoViT(config, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params), pos_mode)


def load_aesthetic_head(path, dim: int = 768) -> tuple[np.ndarray, np.ndarray]:
    """(weight [1, dim], bias [1]) of the LAION aesthetic predictor from the .npz (or .safetensors) that
    amd_jax/tools/convert_aesthetic.py writes from sa_0_4_vit_l_14_linear.pth (keys 'weight', 'bias')."""
    from amd_jax import tensor_files
    from amd_jax.errors import ConfigError

    raw = tensor_files.read(path)
    w, b = raw.get("weight"), raw.get("bias")
    if w is None or b is None or tuple(w.shape) != (1, dim) or tuple(b.shape) != (1,):
        got = {k: tuple(v.shape) for k, v in raw.items()}
        raise ConfigError(f"--aesthetic={path}: holds {got}, not the LAION aesthetic head (weight (1, {dim}), bias "
                          f"(1,)); convert sa_0_4_vit_l_14_linear.pth with python -m amd_jax.tools.convert_aesthetic.")
    return np.asarray(w, np.float32), np.asarray(b, np.float32)
