"""The ImageNet classifier rewards against transformers' PyTorch ViT / ResNet (committed fixtures, tiny random
weights).

Fixtures: tests/fixtures/make_imagenet_classifier_fixtures.py (torch + transformers, nothing downloaded):
10-class classifiers at 32 px, their processors' pixels of uint8 images that are downscaled, upscaled or not
resized, and PyTorch's log_softmax of the logits.
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

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
# reward name -> (fixture folder, square sizes: downscale, upscale, no resize (ViT) / crop only (ResNet))
CASES = {"imagenet_vit": ("imagenet_vit", (48, 20, 32)), "imagenet_resnet": ("imagenet_resnet", (48, 20, 36))}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    folder, sizes = CASES[request.param]
    clf = load_reward(request.param, os.path.join(FIX, folder))
    return clf, dict(np.load(os.path.join(FIX, folder, "reference.npz"))), sizes


def _signed(images_uint8):
    return jnp.asarray(images_uint8, jnp.float32) / 127.5 - 1.0


def test_network_matches_pytorch_on_its_pixels(case):
    """Same pixels in: the Flax classifier's log-softmax equals PyTorch's to float32 round-off."""
    clf, ref, sizes = case
    for size in sizes:
        got = jax.nn.log_softmax(clf.pixel_logits(clf.params, jnp.asarray(ref[f"{size}/pixel_values"])))
        err = float(np.abs(np.asarray(got) - ref[f"{size}/log_probs"]).max())
        assert err < 5e-5, f"{clf.name} {size}px: max abs diff {err}"


def test_preprocessing_matches_image_processor(case):
    """In uint8 levels: the float32 path is within 1.05 levels of PIL's uint8 path (bicubic overshoots the
    rounding: 1.03 measured), quantize=True within 1 level with >= 97% of the values equal; the last size is not
    resized (ViT) or only cropped (ResNet): equal."""
    clf, ref, sizes = case
    level = 1 / 255 / np.asarray(clf.preprocess_cfg.std)  # one uint8 level after normalising, per channel
    for size in sizes:
        want = ref[f"{size}/pixel_values"]
        for quantize, bound, identical in ((False, 1.05, 0.0), (True, 1.0001, 0.97)):
            got = np.asarray(preprocess(_signed(ref[f"{size}/images"]),
                                        dataclasses.replace(clf.preprocess_cfg, quantize=quantize)))
            levels = np.abs(got - want) / level
            assert got.shape == want.shape and levels.max() <= bound, (clf.name, size, quantize, levels.max())
            exact = (levels < 1e-2).mean()
            assert exact >= (1.0 if size == sizes[-1] else identical), (clf.name, size, quantize, exact)


def test_log_prob_end_to_end_and_jit_grad(case):
    """log_prob on [-1, 1] images (transform inside) vs PyTorch on the processor's pixels; jit and grad work."""
    clf, ref, sizes = case
    fn = jax.jit(clf.log_prob)
    for size in sizes:
        labels = ref[f"{size}/labels"]
        want = ref[f"{size}/log_probs"][np.arange(len(labels)), labels]
        got = np.asarray(fn(clf.params, _signed(ref[f"{size}/images"]), jnp.asarray(labels)))
        assert got.dtype == np.float32 and got.shape == want.shape
        err = np.abs(got - want).max()
        assert err < (5e-5 if size == sizes[-1] else 1e-2), f"{clf.name} {size}px: max abs diff {err}"
    x = _signed(ref["48/images"])
    grad = jax.grad(lambda im: clf.log_prob(clf.params, im, jnp.asarray(ref["48/labels"])).sum())(x)
    assert grad.shape == x.shape and bool(jnp.isfinite(grad).all()) and float(jnp.abs(grad).max()) > 0


def test_refuses_unsupported_processor_and_wrong_tensors(tmp_path):
    folder = tmp_path / "vit"
    shutil.copytree(os.path.join(FIX, "imagenet_vit"), folder)
    proc = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**proc, "resample": 3}))
    with pytest.raises(NotImplementedError, match=r"resample=3 \(need 2\)"):
        load_reward("imagenet_vit", folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(proc))
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "num_labels": 7, "id2label": None, "label2id": None}))
    with pytest.raises(ValueError, match=r"image classifier checkpoint does not match.*classifier\.weight: "
                                         r"expected \(7, 32\), got \(10, 32\)"):
        load_reward("imagenet_vit", folder)
    with pytest.raises(ValueError, match="model_type 'vit', this reward needs 'resnet'"):
        load_reward("imagenet_resnet", folder)


def test_resnet_needs_its_batchnorm_statistics(tmp_path):
    from amd_jax import tensor_files

    folder = tmp_path / "resnet"
    shutil.copytree(os.path.join(FIX, "imagenet_resnet"), folder)
    state = tensor_files.read(folder / "model.safetensors")
    tensor_files.write(folder / "model.safetensors", {k: v for k, v in state.items() if "running_var" not in k})
    with pytest.raises(ValueError, match="BatchNorm statistics params do not match.*missing.*normalization/var"):
        load_reward("imagenet_resnet", folder)


def test_refuses_non_square_images():
    clf = load_reward("imagenet_vit", os.path.join(FIX, "imagenet_vit"))
    with pytest.raises(ValueError, match="square"):
        clf.log_prob(clf.params, jnp.zeros((1, 32, 40, 3)), jnp.zeros((1,), jnp.int32))


def test_reads_released_preprocessor_configs():
    """google/vit-base-patch16-224's (legacy int size) and microsoft/resnet-50's preprocessor_config.json."""
    from amd_jax.models.rewards.imagenet_classifier import convnext_preprocess_config, vit_preprocess_config

    vit = {"do_normalize": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
           "resample": 2, "size": 224}
    cfg = vit_preprocess_config(vit, 224)
    assert (cfg.image_size, cfg.crop, cfg.resample, cfg.mean) == (224, "none", "bilinear", (0.5,) * 3)
    with pytest.raises(NotImplementedError, match=r"size=384 \(need 224x224"):
        vit_preprocess_config({**vit, "size": 384}, 224)
    resnet = {"crop_pct": 0.875, "do_normalize": True, "do_rescale": True, "do_resize": True,
              "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "ConvNextImageProcessor",
              "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 0.00392156862745098,
              "size": {"shortest_edge": 224}}
    cfg = convnext_preprocess_config(resnet)
    assert (cfg.image_size, cfg.resize_size, cfg.crop, cfg.resample) == (224, 256, "hf", "bicubic")
