"""The ImageNet classifier reward against transformers' PyTorch ViT (committed fixtures, tiny random weights).

Fixtures: tests/fixtures/make_imagenet_classifier_fixtures.py (torch + transformers, nothing downloaded):
a 10-class 32 px ViTForImageClassification, ViTImageProcessor's pixels of uint8 images of 48 px (downscale),
20 px (upscale) and 32 px (identity), and PyTorch's log_softmax of the logits.
"""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax.models.rewards.preprocess import preprocess
from amd_jax.models.rewards.registry import load_reward

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "imagenet_vit")
SIZES = (48, 20, 32)
LEVEL = 1 / 255 / 0.5  # one uint8 level after the processor's normalisation (std 0.5)


@pytest.fixture(scope="module")
def clf():
    return load_reward("imagenet_vit", FIX)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIX, "reference.npz")))


def _signed(images_uint8):
    return jnp.asarray(images_uint8, jnp.float32) / 127.5 - 1.0


def test_network_matches_pytorch_on_its_pixels(clf, ref):
    """Same pixels in: the Flax ViT's log-softmax equals PyTorch's to float32 round-off."""
    for size in SIZES:
        got = jax.nn.log_softmax(clf.pixel_logits(clf.params, jnp.asarray(ref[f"{size}/pixel_values"])))
        err = float(np.abs(np.asarray(got) - ref[f"{size}/log_probs"]).max())
        assert err < 2e-5, f"{size}px: max abs diff {err}"


@pytest.mark.parametrize("size", SIZES)
def test_preprocessing_matches_vit_image_processor(clf, ref, size):
    """Float32 resize within one uint8 level of PIL's; quantize=True makes >= 97% of the values bit-identical."""
    x = _signed(ref[f"{size}/images"])
    want = ref[f"{size}/pixel_values"]
    for quantize, identical in ((False, 0.0), (True, 0.97)):
        got = np.asarray(preprocess(x, dataclasses.replace(clf.preprocess_cfg, quantize=quantize)))
        diff = np.abs(got - want)
        assert got.shape == want.shape and diff.max() <= LEVEL * 1.0001, f"{size}px: {diff.max() / LEVEL} levels"
        assert (diff < 1e-5).mean() >= (1.0 if size == 32 else identical), (size, quantize, (diff < 1e-5).mean())


def test_log_prob_end_to_end_and_jit_grad(clf, ref):
    """log_prob on [-1, 1] images (resize inside) vs PyTorch on the processor's pixels; jit and grad work."""
    fn = jax.jit(clf.log_prob)
    for size in SIZES:
        labels = ref[f"{size}/labels"]
        want = ref[f"{size}/log_probs"][np.arange(len(labels)), labels]
        got = np.asarray(fn(clf.params, _signed(ref[f"{size}/images"]), jnp.asarray(labels)))
        assert got.dtype == np.float32 and got.shape == want.shape
        err = np.abs(got - want).max()
        assert err < (2e-5 if size == 32 else 2e-3), f"{size}px: max abs diff {err}"
    x = _signed(ref["48/images"])
    grad = jax.grad(lambda im: clf.log_prob(clf.params, im, jnp.asarray(ref["48/labels"])).sum())(x)
    assert grad.shape == x.shape and bool(jnp.isfinite(grad).all()) and float(jnp.abs(grad).max()) > 0


def test_refuses_unsupported_processor_and_wrong_tensors(tmp_path):
    folder = tmp_path / "vit"
    shutil.copytree(FIX, folder)
    proc = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**proc, "resample": 3}))
    with pytest.raises(NotImplementedError, match=r"resample=3 \(need 2\)"):
        load_reward("imagenet_vit", folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(proc))
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "num_labels": 7, "id2label": None, "label2id": None}))
    with pytest.raises(ValueError, match=r"ViT classifier checkpoint does not match.*classifier\.weight: "
                                         r"expected \(7, 32\), got \(10, 32\)"):
        load_reward("imagenet_vit", folder)


def test_refuses_non_square_images(clf):
    with pytest.raises(ValueError, match="square"):
        clf.log_prob(clf.params, jnp.zeros((1, 32, 40, 3)), jnp.zeros((1,), jnp.int32))


def test_reads_google_vit_base_preprocessor_config():
    """google/vit-base-patch16-224's preprocessor_config.json (legacy int size) -> a 224 px bilinear resize, no crop."""
    from amd_jax.models.rewards.imagenet_classifier import vit_preprocess_config

    proc = {"do_normalize": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "resample": 2, "size": 224}
    cfg = vit_preprocess_config(proc, 224)
    assert (cfg.image_size, cfg.crop, cfg.resample, cfg.mean, cfg.std) == (224, "none", "bilinear", (0.5,) * 3,
                                                                         (0.5,) * 3)
    with pytest.raises(NotImplementedError, match=r"size=384 \(need 224x224"):
        vit_preprocess_config({**proc, "size": 384}, 224)
