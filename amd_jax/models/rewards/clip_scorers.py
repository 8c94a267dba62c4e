"""Frozen CLIP-based reward models (HPSv2, PickScore, CLIP score) on transformers' Flax CLIP network.

A :class:`CLIPScorer` holds ``params`` and a pure, jit-able, differentiable
``score(params, images, text_tokens) -> [B] float32`` taking images in [-1, 1] NHWC at any resolution (the
reference preprocessing runs inside, see preprocess.py) and one token row per image (``scorer.tokenize``).
Scores, with unit-normalised embeddings and cos = <img, txt>:

* ``cosine``      -- HPSv2: ``hps_score = diag(image_features @ text_features.T)`` of open_clip's normalised
  features, NOT multiplied by 100 or the logit scale (tgxs002/HPSv2 score.py / img_score.py), ~0.2-0.35.
* ``logit_scale`` -- PickScore: ``model.logit_scale.exp() * cos`` (~100 * cos for the released model).
* ``clip_score``  -- torchmetrics' CLIPScore per pair: ``100 * max(cos, 0)``. (torchmetrics clamps the batch
  MEAN at 0 instead of each pair; the two agree whenever every cosine is >= 0.)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from transformers import CLIPConfig
from transformers.models.clip.modeling_flax_clip import FlaxCLIPModule

from amd_jax.models.rewards import openclip_weights as oc
from amd_jax.models.rewards import weights as W
from amd_jax.models.rewards.preprocess import OPENAI_MEAN, OPENAI_STD, PreprocessConfig, preprocess
from amd_jax.models.rewards.tokenizer import CLIPTokenizer, load_tokenizer

SCORE_TYPES = ("cosine", "logit_scale", "clip_score")


def _normalize(x):
    """F.normalize(x, dim=-1) (eps 1e-12), in float32."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclasses.dataclass(eq=False)
class CLIPScorer:
    """A frozen CLIP reward: ``params`` plus pure feature / score functions (static config in the object)."""

    name: str
    config: CLIPConfig
    params: Any
    preprocess_cfg: PreprocessConfig
    score_type: str
    tokenizer: CLIPTokenizer | None = None
    dtype: Any = jnp.float32

    def __post_init__(self):
        if self.score_type not in SCORE_TYPES:
            raise ValueError(f"score_type must be one of {SCORE_TYPES}, got {self.score_type!r}")

    @functools.cached_property
    def module(self) -> FlaxCLIPModule:
        return FlaxCLIPModule(self.config, dtype=self.dtype)

    def tokenize(self, prompts):
        """Prompts -> [N, context_length] int32 token ids (host side)."""
        if self.tokenizer is None:
            raise ValueError(f"scorer {self.name!r} was built without a tokenizer")
        return self.tokenizer(prompts)

    def pixel_features(self, params, pixel_values):
        """Unnormalised image embeddings [B, E] of already preprocessed NHWC pixels."""

        def fn(module, px):
            pooled = module.vision_model(pixel_values=px, deterministic=True)[1]
            return module.visual_projection(pooled)

        return self.module.apply({"params": params}, pixel_values.astype(self.dtype), method=fn).astype(jnp.float32)

    def image_features(self, params, images):
        """Unnormalised image embeddings [B, E] of [-1, 1] NHWC images of any size."""
        return self.pixel_features(params, preprocess(images, self.preprocess_cfg))

    def text_features(self, params, text_tokens):
        """Unnormalised text embeddings [N, E] of token ids [N, L] (no padding mask, as open_clip/CLIP do)."""
        ids = jnp.asarray(text_tokens, jnp.int32)
        pos = jnp.broadcast_to(jnp.arange(ids.shape[-1], dtype=jnp.int32), ids.shape)

        def fn(module, ids, mask, pos):
            pooled = module.text_model(input_ids=ids, attention_mask=mask, position_ids=pos, deterministic=True)[1]
            return module.text_projection(pooled)

        return self.module.apply({"params": params}, ids, jnp.ones_like(ids), pos, method=fn).astype(jnp.float32)

    def score_from_features(self, params, image_emb, text_emb):
        """[B] float32 scores of unnormalised embeddings (text rows broadcast against image rows)."""
        cos = jnp.sum(_normalize(image_emb) * _normalize(text_emb), axis=-1)
        if self.score_type == "cosine":
            return cos
        if self.score_type == "logit_scale":
            return jnp.exp(params["logit_scale"].astype(jnp.float32)) * cos
        return 100.0 * jnp.maximum(cos, 0.0)

    def score(self, params, images, text_tokens):
        """One float32 score per (image, prompt) pair: images [B,H,W,3] in [-1,1], text_tokens [B or 1, L]."""
        return self.score_from_features(
            params, self.image_features(params, images), self.text_features(params, text_tokens)
        )

    def abstract_params(self):
        """ShapeDtypeStruct tree of the Flax params for this config (no memory)."""
        return abstract_clip_params(self.config)


def abstract_clip_params(config: CLIPConfig):
    """eval_shape of FlaxCLIPModule.init: the expected param paths and shapes."""
    module = FlaxCLIPModule(config)
    size = config.vision_config.image_size
    ids = jnp.zeros((1, 1), jnp.int32)
    px = jnp.zeros((1, size, size, 3), jnp.float32)
    init = functools.partial(module.init, jax.random.PRNGKey(0), ids, px, ids, ids)
    return jax.eval_shape(init)["params"]


def _to_device(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), tree)


_OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "model.safetensors", "open_clip_model.npz", "model.npz")


def load_openclip(path, arch: str | None = None, score_type: str = "cosine", name: str = "openclip",
                  dtype=jnp.float32, quantize: bool = False) -> CLIPScorer:
    """An open_clip-format folder -> CLIPScorer.

    Folder: one weight file (``open_clip_model.safetensors``, ``model.safetensors``, ``*.npz`` ... in open_clip
    tensor names), the tokenizer (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``), and optionally
    ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``); without it `arch` names one of
    ``OPENCLIP_CONFIGS`` (mean/std then default to OpenAI's, as for ViT-H-14 and ViT-g-14).
    """
    folder = W.as_path(path)
    weights = W.find_file(folder, _OPENCLIP_WEIGHTS, (".safetensors", ".npz"), "open_clip weight file")
    cfg_file = folder / "open_clip_config.json"
    pre = {}
    if cfg_file.exists():
        meta = W.read_json(cfg_file)
        model_cfg, pre = meta["model_cfg"], meta.get("preprocess_cfg", {})
    elif arch in oc.OPENCLIP_CONFIGS:
        model_cfg = oc.OPENCLIP_CONFIGS[arch]
    else:
        raise FileNotFoundError(f"{cfg_file} not found and arch={arch!r} is not one of {list(oc.OPENCLIP_CONFIGS)}")
    if pre.get("interpolation", "bicubic") != "bicubic" or pre.get("resize_mode", "shortest") != "shortest":
        raise NotImplementedError(f"only bicubic shortest-side preprocessing is implemented, got {pre}")
    config = oc.clip_config_from_openclip(model_cfg)
    state = oc.strip_prefix(W.load_tensors(weights))
    oc.check_openclip_state_dict(state, config)
    params = oc.convert_openclip_state_dict(state, config)
    W.check_tree(params, abstract_clip_params(config), f"{name} ({weights.name})")
    cfg = PreprocessConfig(
        image_size=config.vision_config.image_size, mean=tuple(pre.get("mean", OPENAI_MEAN)),
        std=tuple(pre.get("std", OPENAI_STD)), crop="torchvision", quantize=quantize,
    )
    tok = load_tokenizer(folder, config.text_config.max_position_embeddings, pad_id=0)
    return CLIPScorer(name, config, _to_device(params), cfg, score_type, tok, dtype)


_HF_WEIGHTS = ("model.safetensors", "model.npz")


def load_hf_clip(path, score_type: str = "clip_score", name: str = "clip", dtype=jnp.float32,
                 quantize: bool = False) -> CLIPScorer:
    """A transformers CLIPModel folder -> CLIPScorer.

    Folder: ``config.json``, ``model.safetensors`` (PyTorch layout; or the same keys in ``model.npz``), the
    tokenizer (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``, with ``special_tokens_map.json`` for the pad
    token) and optionally ``preprocessor_config.json`` (CLIPImageProcessor: bicubic, crop == shortest edge).
    """
    folder = W.as_path(path)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no config.json in {folder} (transformers CLIPModel layout expected)")
    config = CLIPConfig.from_dict(W.read_json(folder / "config.json"))
    weights = W.find_file(folder, _HF_WEIGHTS, (".safetensors",), "transformers weight file")
    params = W.convert_hf_state_dict(W.load_tensors(weights), abstract_clip_params(config))
    size = config.vision_config.image_size
    mean, std = OPENAI_MEAN, OPENAI_STD
    if (folder / "preprocessor_config.json").exists():
        proc = W.read_json(folder / "preprocessor_config.json")
        crop = proc.get("crop_size", size)
        crop = crop.get("height", crop) if isinstance(crop, dict) else crop
        short = proc.get("size", crop)
        short = short.get("shortest_edge", short) if isinstance(short, dict) else short
        if crop != size or short != size or proc.get("resample", 3) != 3:
            raise NotImplementedError(
                f"preprocessor_config.json: need bicubic (3) resize of the shortest edge to the crop = model image "
                f"size {size}, got size={short}, crop_size={crop}, resample={proc.get('resample')}")
        mean, std = tuple(proc.get("image_mean", mean)), tuple(proc.get("image_std", std))
    cfg = PreprocessConfig(image_size=size, mean=mean, std=std, crop="hf", quantize=quantize)
    tok = load_tokenizer(folder, config.text_config.max_position_embeddings, pad_id=None)
    return CLIPScorer(name, config, _to_device(params), cfg, score_type, tok, dtype)


def load_hpsv2(path, **kw) -> CLIPScorer:
    """HPSv2 / HPSv2.1: open_clip ViT-H-14 with the HPS checkpoint converted to safetensors; score = cosine."""
    return load_openclip(path, arch="ViT-H-14", score_type="cosine", name="hpsv2", **kw)


def load_pickscore(path, **kw) -> CLIPScorer:
    """PickScore_v1 (transformers ViT-H-14 CLIPModel folder); score = logit_scale.exp() * cosine."""
    return load_hf_clip(path, score_type="logit_scale", name="pickscore", **kw)


def load_clip_l14(path, **kw) -> CLIPScorer:
    """openai/clip-vit-large-patch14 (transformers folder); score = 100 * max(cosine, 0)."""
    return load_hf_clip(path, score_type="clip_score", name="clip_l14", **kw)


def load_clip_g14(path, **kw) -> CLIPScorer:
    """open_clip ViT-g-14 (laion2b_s34b_b88k, open_clip folder); score = 100 * max(cosine, 0)."""
    return load_openclip(path, arch="ViT-g-14", score_type="clip_score", name="clip_g14", **kw)


_OPENCLIP_ARCH = {"hpsv2": ("ViT-H-14", "cosine"), "clip_g14": ("ViT-g-14", "clip_score")}
_HF_SCORE = {"pickscore": "logit_scale", "clip_l14": "clip_score"}


def architecture_scorer(name: str, path="") -> CLIPScorer:
    """The scorer `name` without weights or tokenizer (params=None; abstract_params() gives their shapes), from
    the folder's config file alone, or, for the open_clip rewards, the built-in architecture when there is no
    folder: what tracing and compiling the reward needs (the TPU plan, amd_jax/plan), nothing loaded."""
    folder = W.as_path(path) if path else None
    if name in _OPENCLIP_ARCH:
        arch, score_type = _OPENCLIP_ARCH[name]
        cfg_file = None if folder is None else folder / "open_clip_config.json"
        meta = W.read_json(cfg_file) if cfg_file is not None and cfg_file.exists() else {}
        config = oc.clip_config_from_openclip(meta.get("model_cfg", oc.OPENCLIP_CONFIGS[arch]))
        crop = "torchvision"
    elif name in _HF_SCORE:
        if folder is None or not (folder / "config.json").exists():
            raise FileNotFoundError(f"reward {name!r} needs its folder's config.json (transformers CLIPModel) to "
                                    f"be planned; got path {path!r}")
        config, score_type, crop = CLIPConfig.from_dict(W.read_json(folder / "config.json")), _HF_SCORE[name], "hf"
    else:
        raise KeyError(f"unknown reward {name!r}; known: {sorted({**_OPENCLIP_ARCH, **_HF_SCORE})}")
    size = config.vision_config.image_size
    pre = PreprocessConfig(image_size=size, mean=OPENAI_MEAN, std=OPENAI_STD, crop=crop)
    return CLIPScorer(name, config, None, pre, score_type)
