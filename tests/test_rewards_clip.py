"""CLIP reward scorers (HPSv2 / PickScore / CLIP score) against committed open_clip and transformers references.

Fixtures come from tests/fixtures/make_clip_fixtures.py (torch, open_clip, transformers; not needed here):
tiny random models in open_clip and transformers layouts, reference pixels, tokens, features and scores computed
by the PyTorch libraries, and the tensor names/shapes of the full-size models.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from safetensors.numpy import load_file, save_file

from amd_jax.models.rewards import openclip_weights as oc
from amd_jax.models.rewards.clip_scorers import abstract_clip_params, load_hf_clip, load_openclip
from amd_jax.models.rewards.preprocess import PreprocessConfig, preprocess
from amd_jax.models.rewards.registry import REWARD_LOADERS, load_reward
from amd_jax.models.rewards.tokenizer import load_tokenizer
from amd_jax.models.rewards.weights import convert_hf_state_dict

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "clip")
OC_DIR, HF_DIR = os.path.join(FIX, "openclip_tiny"), os.path.join(FIX, "hf_tiny")
N_IMAGES = 4
FEATURE_ATOL = 2e-5  # float32 network vs network (measured max abs diff ~1e-6 on features of norm ~1-5)


@pytest.fixture(scope="module")
def ref():
    with np.load(os.path.join(FIX, "reference.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def prompts():
    with open(os.path.join(FIX, "prompts.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def oc_scorer():
    return load_openclip(OC_DIR, score_type="cosine", name="hpsv2", quantize=True)


@pytest.fixture(scope="module")
def hf_scorer():
    return load_hf_clip(HF_DIR, score_type="logit_scale", name="pickscore", quantize=True)


_FEATURES = {}


def _features(scorer, kind, ref):
    """Jitted (image, text) features of the reference pixels and tokens, computed once per model."""
    if kind not in _FEATURES:
        fn = jax.jit(lambda p, px, ids: (scorer.pixel_features(p, px), scorer.text_features(p, ids)))
        _FEATURES[kind] = fn(scorer.params, jnp.asarray(ref[f"{kind}_pixels"]), ref[f"{kind}_tokens"])
    return _FEATURES[kind]


def _to_pm1(image_u8):
    return jnp.asarray(image_u8[None].astype(np.float32) / 127.5 - 1.0)


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# --------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_matches_openclip_simple_tokenizer(prompts, ref):
    tok = load_tokenizer(OC_DIR, context_length=16, pad_id=0)
    ids = tok(prompts)
    assert ids.dtype == np.int32 and ids.shape == (len(prompts), 16)
    np.testing.assert_array_equal(ids, ref["prompt_tokens_openclip"])
    assert ids[2, -1] == 1023  # the long prompt is truncated with end-of-text kept last


def test_tokenizer_matches_transformers_layout(hf_scorer, prompts, ref):
    np.testing.assert_array_equal(hf_scorer.tokenize(prompts), ref["hf_tokens"])  # pad = <|endoftext|>


# ------------------------------------------------------------------------------------ network parity


@pytest.mark.parametrize("kind", ["oc", "hf"])
def test_features_match_pytorch(kind, oc_scorer, hf_scorer, ref):
    scorer = oc_scorer if kind == "oc" else hf_scorer
    img, txt = _features(scorer, kind, ref)
    assert img.dtype == jnp.float32 and txt.dtype == jnp.float32
    d_img = _max_diff(img, ref[f"{kind}_image_features"])
    d_txt = _max_diff(txt, ref[f"{kind}_text_features"])
    print(f"{kind}: max |image features diff| {d_img:.2e}, max |text features diff| {d_txt:.2e}")
    assert d_img < FEATURE_ATOL and d_txt < FEATURE_ATOL


@pytest.mark.parametrize(
    "kind,score_type,key",
    [
        ("oc", "cosine", "oc_hps_score"),
        ("oc", "clip_score", "oc_clip_score"),
        ("oc", "logit_scale", "oc_logit_scale_score"),
        ("hf", "logit_scale", "hf_pick_score"),
        ("hf", "clip_score", "hf_clip_score"),
    ],
)
def test_scores_from_reference_pixels(kind, score_type, key, oc_scorer, hf_scorer, ref):
    base = oc_scorer if kind == "oc" else hf_scorer
    scorer = type(base)(base.name, base.config, base.params, base.preprocess_cfg, score_type, base.tokenizer)
    img, txt = _features(base, kind, ref)
    got = scorer.score_from_features(scorer.params, img, txt)
    assert got.shape == (N_IMAGES,) and got.dtype == jnp.float32
    scale = 100.0 if score_type != "cosine" else 1.0
    print(f"{key}: max abs diff {_max_diff(got, ref[key]):.2e} (scores {np.round(ref[key], 4)})")
    np.testing.assert_allclose(got, ref[key], atol=2e-5 * scale, rtol=0)


def test_clip_score_clamps_negative_cosine(oc_scorer):
    scorer = type(oc_scorer)("c", oc_scorer.config, oc_scorer.params, oc_scorer.preprocess_cfg, "clip_score")
    img = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    txt = jnp.array([[-1.0, 0.2], [3.0, 4.0]])
    np.testing.assert_allclose(scorer.score_from_features(scorer.params, img, txt), [0.0, 60.0], atol=1e-5)


# ------------------------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("kind", ["oc", "hf"])
@pytest.mark.parametrize("quantize", [False, True])
def test_preprocess_matches_pil_reference(kind, quantize, oc_scorer, hf_scorer, ref):
    cfg = (oc_scorer if kind == "oc" else hf_scorer).preprocess_cfg
    cfg = PreprocessConfig(cfg.image_size, cfg.mean, cfg.std, cfg.crop, quantize)
    one_level = 1.0 / 255.0 / min(cfg.std)  # one uint8 step after normalisation
    for i in range(N_IMAGES):
        got = np.asarray(jax.jit(lambda x: preprocess(x, cfg))(_to_pm1(ref[f"image{i}"])))[0]
        diff = np.abs(got - ref[f"{kind}_pixels"][i])
        print(f"{kind} image{i} {ref[f'image{i}'].shape[:2]} quantize={quantize}: max {diff.max() / one_level:.3f} "
              f"uint8 levels, mean {diff.mean() / one_level:.4f}, > 0.5 level: {(diff > 0.5 * one_level).mean():.4f}")
        assert diff.max() <= 1.05 * one_level  # never more than one uint8 level
        if quantize:
            assert (diff > 0.5 * one_level).mean() < 0.01  # all but rare rounding ties exact
        else:
            assert diff.mean() < 0.4 * one_level


def test_preprocess_crop_convention_matters(ref):
    """The 96x70 image crops at offset 6 (torchvision round) vs 5 (transformers floor): the two must differ."""
    x = _to_pm1(ref["image2"])
    a = jax.jit(lambda x: preprocess(x, PreprocessConfig(32, crop="torchvision")))(x)
    b = jax.jit(lambda x: preprocess(x, PreprocessConfig(32, crop="hf")))(x)
    assert _max_diff(a, b) > 0.1


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("kind,key", [("oc", "oc_hps_score"), ("hf", "hf_pick_score")])
def test_jitted_score_end_to_end(kind, key, oc_scorer, hf_scorer, ref):
    scorer = oc_scorer if kind == "oc" else hf_scorer
    score = jax.jit(scorer.score)
    got = np.array([float(score(scorer.params, _to_pm1(ref[f"image{i}"]), ref[f"{kind}_tokens"][i:i + 1])[0])
                    for i in range(N_IMAGES)])
    scale = 1.0 if kind == "oc" else 30.0
    print(f"{key} end to end from uint8 images: max abs diff {_max_diff(got, ref[key]):.2e}")
    np.testing.assert_allclose(got, ref[key], atol=5e-4 * scale, rtol=0)


def test_batch_score_float32_and_differentiable(oc_scorer, ref):
    images = jnp.concatenate([_to_pm1(ref["image0"]), -_to_pm1(ref["image0"])])
    tokens = ref["oc_tokens"][:2]
    out = jax.jit(oc_scorer.score)(oc_scorer.params, images, tokens)
    assert out.shape == (2,) and out.dtype == jnp.float32
    np.testing.assert_allclose(out[0], ref["oc_hps_score"][0], atol=5e-4)
    grad = jax.jit(jax.grad(lambda x: oc_scorer.score(oc_scorer.params, x * 0.9, tokens).sum()))(images)
    assert grad.shape == images.shape and np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 0


# ------------------------------------------------------------------------------------ registry


def test_registry_names_and_score_types():
    assert set(REWARD_LOADERS) >= {"hpsv2", "pickscore", "clip_l14", "clip_g14"}
    assert load_reward("hpsv2", OC_DIR).score_type == "cosine"
    assert load_reward("clip_g14", OC_DIR).score_type == "clip_score"
    assert load_reward("pickscore", HF_DIR).score_type == "logit_scale"
    assert load_reward("clip_l14", HF_DIR).score_type == "clip_score"
    with pytest.raises(KeyError, match="unknown reward"):
        load_reward("nope", OC_DIR)


# ------------------------------------------------------------------------------------ bad weights


def _copy(src, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def _edit_oc(tmp_path, fn):
    folder = _copy(OC_DIR, tmp_path)
    path = str(folder / "open_clip_model.safetensors")
    sd = load_file(path)
    fn(sd)
    save_file(sd, path)
    return folder


def test_openclip_missing_tensor_is_named(tmp_path):
    folder = _edit_oc(tmp_path, lambda sd: sd.pop("visual.transformer.resblocks.1.attn.in_proj_weight"))
    with pytest.raises(ValueError, match=r"missing tensors.*visual\.transformer\.resblocks\.1\.attn\.in_proj_weight"):
        load_openclip(folder)


def test_openclip_extra_tensor_is_named(tmp_path):
    folder = _edit_oc(tmp_path, lambda sd: sd.__setitem__("visual.head.weight", np.zeros((2, 2), np.float16)))
    with pytest.raises(ValueError, match=r"unexpected tensors.*visual\.head\.weight"):
        load_openclip(folder)


def test_openclip_shape_mismatch_is_named(tmp_path):
    folder = _edit_oc(tmp_path, lambda sd: sd.__setitem__("text_projection", np.zeros((48, 31), np.float16)))
    with pytest.raises(ValueError, match=r"shape mismatches.*text_projection: expected \(48, 32\), got \(48, 31\)"):
        load_openclip(folder)


def test_hf_bad_tensors_are_named(tmp_path):
    folder = _copy(HF_DIR, tmp_path)
    path = str(folder / "model.safetensors")
    sd = load_file(path)
    sd.pop("text_model.encoder.layers.0.mlp.fc2.bias")
    sd["vision_model.post_layernorm.weight"] = np.zeros((47,), np.float16)
    sd["extra.weight"] = np.zeros((1,), np.float16)
    save_file(sd, path)
    with pytest.raises(ValueError) as err:
        load_hf_clip(folder)
    msg = str(err.value)
    assert "text_model/encoder/layers/0/mlp/fc2/bias" in msg
    assert "vision_model.post_layernorm.weight: expected (48,), got (47,)" in msg
    assert "extra.weight" in msg


def test_missing_files_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_openclip(tmp_path / "absent")
    folder = _copy(OC_DIR, tmp_path)
    os.remove(folder / "open_clip_model.safetensors")
    (folder / "HPS_v2_compressed.pt").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="no open_clip weight file"):
        load_openclip(folder)
    folder2 = _copy(HF_DIR, tmp_path / "b")
    for name in ("vocab.json", "merges.txt"):
        os.remove(folder2 / name)
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_hf_clip(folder2)
    os.remove(folder2 / "config.json")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_clip(folder2)


def test_npz_weights_load_identically(tmp_path, oc_scorer, ref):
    folder = _copy(OC_DIR, tmp_path)
    sd = load_file(str(folder / "open_clip_model.safetensors"))
    os.remove(folder / "open_clip_model.safetensors")
    np.savez(folder / "model.npz", **sd)
    scorer = load_openclip(folder)
    for a, b in zip(jax.tree_util.tree_leaves(scorer.params), jax.tree_util.tree_leaves(oc_scorer.params)):
        np.testing.assert_array_equal(a, b)


def test_converted_checkpoint_folder_scores_like_open_clip(tmp_path, ref):
    """openclip_weights.write_folder (what convert_openclip runs) on a DDP-style state dict ('module.' keys,
    float64): the folder it writes loads as 'hpsv2' and scores the reference images as open_clip did; a bad
    checkpoint writes nothing."""
    sd = {f"module.{k}": v.astype(np.float64)  # a checkpoint saved from DDP, in another float type
          for k, v in load_file(os.path.join(OC_DIR, "open_clip_model.safetensors")).items()}
    with open(os.path.join(OC_DIR, "open_clip_config.json")) as f:
        meta = json.load(f)
    bad = dict(sd)
    bad.pop("module.visual.proj")
    with pytest.raises(ValueError, match=r"missing tensors.*visual\.proj"):
        oc.write_folder(bad, tmp_path / "bad", meta["model_cfg"], OC_DIR)
    assert not (tmp_path / "bad").exists()

    out = oc.write_folder(sd, tmp_path / "hps", meta["model_cfg"], OC_DIR, meta["preprocess_cfg"])
    assert sorted(p.name for p in out.iterdir()) == ["merges.txt", "open_clip_config.json",
                                                     "open_clip_model.safetensors", "vocab.json"]
    scorer = load_reward("hpsv2", str(out))
    got = np.array([float(scorer.score(scorer.params, _to_pm1(ref[f"image{i}"]), ref["oc_tokens"][i:i + 1])[0])
                    for i in range(N_IMAGES)])
    np.testing.assert_allclose(got, ref["oc_hps_score"], atol=5e-4, rtol=0)  # as test_jitted_score_end_to_end


# ------------------------------------------------------------------------------------ full-size trees


def _flat_shapes(tree):
    return {"/".join(k): tuple(v.shape) for k, v in flatten_dict(tree).items()}


def _keep_layers(shapes, n):
    """Drop the tensors of transformer layers >= n (every layer has the same names and shapes)."""
    import re

    return {k: v for k, v in shapes.items()
            if not (m := re.search(r"(resblocks|layers)\.(\d+)\.", k)) or int(m.group(2)) < n}


@pytest.mark.parametrize("arch,depth", [("ViT-H-14", None), ("ViT-g-14", 2)])
def test_full_size_openclip_conversion_shapes(arch, depth):
    """Real open_clip tensor names/shapes (meta-device model) -> converter -> exactly FlaxCLIPModel's tree.

    depth=None converts the whole ViT-H-14 tree under eval_shape; for ViT-g-14 every name and shape is checked
    against the full config, then the tree is converted with both towers cut to `depth` layers (faster tracing).
    """
    with open(os.path.join(FIX, f"{arch}_shapes.json")) as f:
        entry = json.load(f)
    assert entry["model_cfg"] == oc.OPENCLIP_CONFIGS[arch]
    config = oc.clip_config_from_openclip(oc.OPENCLIP_CONFIGS[arch])
    shapes = entry["shapes"]
    oc.check_openclip_state_dict({k: jax.ShapeDtypeStruct(tuple(v), jnp.float32) for k, v in shapes.items()}, config)
    if depth is not None:
        config.vision_config.num_hidden_layers = config.text_config.num_hidden_layers = depth
        shapes = _keep_layers(shapes, depth)
    abstract_sd = {k: jax.ShapeDtypeStruct(tuple(v), jnp.float32) for k, v in shapes.items()}
    converted = jax.eval_shape(lambda s: oc.convert_openclip_state_dict(s, config), abstract_sd)
    assert _flat_shapes(converted) == _flat_shapes(abstract_clip_params(config))


@pytest.mark.parametrize("name,layers", [("clip_l14", (12, 24)), ("pickscore", (24, 32))])
def test_full_size_transformers_conversion_shapes(name, layers):
    """transformers' full-size tensor names/shapes (meta device) -> converter -> FlaxCLIPModel tree (depth 2)."""
    from transformers import CLIPConfig

    with open(os.path.join(FIX, f"{name}_shapes.json")) as f:
        entry = json.load(f)
    config = CLIPConfig.from_dict(entry["config"])
    assert (config.text_config.num_hidden_layers, config.vision_config.num_hidden_layers) == layers
    assert {k for k in entry["shapes"] if ".layers.%d." % (layers[1] - 1) in k}  # the deepest layer is listed
    config.text_config.num_hidden_layers = config.vision_config.num_hidden_layers = 2
    abstract = abstract_clip_params(config)
    shapes = _keep_layers(entry["shapes"], 2)
    abstract_sd = {k: jax.ShapeDtypeStruct(tuple(v), jnp.float32) for k, v in shapes.items()}
    converted = jax.eval_shape(lambda s: convert_hf_state_dict(s, abstract), abstract_sd)
    assert _flat_shapes(converted) == _flat_shapes(abstract)
