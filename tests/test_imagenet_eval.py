"""ADM's ImageNet evaluators (amd_jax/metrics/imagenet.py) against plain NumPy transcriptions of ADM's formulas,
closed forms, and the pytorch-fid fixtures of tests/fixtures/inception (random weights regenerated in NumPy)."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax import tensor_files
from amd_jax.errors import DamagedFileError
from amd_jax.metrics import imagenet
from amd_jax.models.inception import network as inc
from amd_jax.models.inception import weights as inc_weights

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
INC = os.path.join(FIX, "inception")


# ------------------------------------------------------------------------------------------ Inception Score


def _adm_inception_score(logits, split_size=5000):
    """ADM's compute_inception_score, transcribed: softmax, then per split exp(mean KL), mean over splits."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    preds = e / e.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def test_inception_score_matches_adm_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(12000, 1008))  # three splits: 5000, 5000 and a short one of 2000
    want = _adm_inception_score(logits)
    assert imagenet.inception_score(logits) == pytest.approx(want, rel=1e-12)
    assert imagenet.inception_score(logits, split_size=12000) == pytest.approx(_adm_inception_score(logits, 12000))
    assert want != pytest.approx(_adm_inception_score(logits, 12000), rel=1e-3)  # the splits matter


def test_inception_score_closed_forms():
    assert imagenet.inception_score(np.zeros((10, 1008))) == pytest.approx(1.0)  # every p(y|x) uniform
    confident = np.full((40, 8), -1e4)
    confident[np.arange(40), np.arange(40) % 8] = 0.0  # certain, and the 8 classes used equally: IS = 8
    assert imagenet.inception_score(confident) == pytest.approx(8.0, rel=1e-9)


# ---------------------------------------------------------------------------------------- precision / recall


def _adm_precision_recall(ref, sample, k=3):
    """ADM's ManifoldEstimator, brute force: squared distances, radius = k-th smallest (self included)."""
    def sq(a, b):
        return np.array([[np.sum((x - y) ** 2) for y in b] for x in a])

    r_ref, r_sample = np.sort(sq(ref, ref), 1)[:, k], np.sort(sq(sample, sample), 1)[:, k]
    precision = np.mean([np.any(sq(s[None], ref)[0] <= r_ref) for s in sample])
    recall = np.mean([np.any(sq(r[None], sample)[0] <= r_sample) for r in ref])
    return precision, recall


def test_precision_recall_matches_brute_force():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((50, 12)).astype(np.float32)
    sample = (0.6 * rng.standard_normal((37, 12)) + 0.7).astype(np.float32)  # partly overlapping, other size
    want = _adm_precision_recall(ref, sample)
    assert 0.05 < want[0] < 0.95 and 0.05 < want[1] < 0.95
    assert imagenet.precision_recall(sample, ref) == pytest.approx(want, abs=1e-12)


def test_precision_recall_closed_forms():
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((30, 8))
    assert imagenet.precision_recall(feats, feats) == (1.0, 1.0)
    assert imagenet.precision_recall(feats + 1e3, feats) == (0.0, 0.0)
    with pytest.raises(ValueError, match="more than 3 samples"):
        imagenet.precision_recall(feats[:3], feats)


# ------------------------------------------------------------------------------------------- input transform


def test_tf1_resize_closed_forms():
    """TF 1.x bilinear (no half-pixel centres): output i samples input i * in / out, the last row held."""
    x = jnp.asarray(np.random.default_rng(3).uniform(0, 255, (1, 5, 4, 3)), jnp.float32)
    up = np.asarray(inc.resize_bilinear_tf1(x, (10, 8)))
    xn = np.asarray(x)
    np.testing.assert_allclose(up[:, ::2, ::2], xn, atol=1e-4)
    np.testing.assert_allclose(up[:, 1:-1:2, ::2], (xn[:, :-1] + xn[:, 1:]) / 2, atol=1e-4)
    np.testing.assert_allclose(up[:, -1, ::2], xn[:, -1], atol=1e-4)  # source 4.5 -> clamped to row 4
    down = np.asarray(inc.resize_bilinear_tf1(jnp.asarray(up), (5, 4)))
    np.testing.assert_allclose(down, up[:, ::2, ::2], atol=1e-4)  # source rows 0, 2, 4, ...: no averaging
    assert not np.allclose(np.asarray(inc.resize_bilinear_torch(x, (10, 8))), up, atol=1e-2)  # torch differs


def test_adm_input_and_uint8_conversion():
    n = inc.INPUT_SIZE
    px = ((np.arange(n)[:, None, None] + np.arange(n)[None, :, None] + np.arange(3)) % 256).astype(np.uint8)[None]
    got = np.asarray(imagenet.adm_input(jnp.asarray(px)))  # 299 px already: no resize, only (x - 128) / 128
    np.testing.assert_array_equal(got, (px.astype(np.float32) - 128) / 128)
    x = np.array([-1.0, -0.5, 0.0, 0.999, 1.0, 1.5], np.float32).reshape(1, 1, 6, 1).repeat(3, -1)
    assert imagenet.to_uint8(x)[0, 0, :, 0].tolist() == [0, 63, 127, 254, 255, 255]  # ADM: truncate, clip
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        imagenet.to_uint8(np.zeros((2, 8, 8)))


# ------------------------------------------------------------------------------------------ reference loader


def _write_ref(path, n=6, hw=32, seed=0, **override):
    rng = np.random.default_rng(seed)
    arrays = {"arr_0": rng.integers(0, 256, (n, hw, hw, 3), dtype=np.uint8),
              "mu": np.zeros(inc.FEATURE_DIM), "sigma": np.eye(inc.FEATURE_DIM),
              "mu_s": np.zeros(imagenet.SPATIAL_DIM), "sigma_s": np.eye(imagenet.SPATIAL_DIM)}
    arrays.update(override)
    tensor_files.write(path, {k: v for k, v in arrays.items() if v is not None})
    return str(path)


def test_reference_loader_reads_adm_layout(tmp_path):
    ref = imagenet.load_reference(_write_ref(tmp_path / "ref.npz"))
    assert ref.images.shape == (6, 32, 32, 3) and ref.sigma_s.shape == (2023, 2023)


@pytest.mark.parametrize("override,message", [
    ({"mu_s": None, "sigma_s": None}, r"lacks \['mu_s', 'sigma_s'\]"),
    ({"mu": np.zeros(1000)}, r"mu has shape \(1000,\), expected \(2048,\)"),
    ({"sigma": np.full((2048, 2048), np.nan)}, "sigma is not finite"),
    ({"arr_0": np.zeros((6, 32, 32, 3), np.float32)}, r"arr_0 must be uint8 images \[N > 3, H, W, 3\]"),
])
def test_reference_loader_refuses_bad_files(tmp_path, override, message):
    path = _write_ref(tmp_path / "ref.npz", **override)
    with pytest.raises(DamagedFileError, match=message) as info:
        imagenet.load_reference(path)
    assert "VIRTUAL_imagenet256_labeled.npz" in str(info.value)


def test_reference_loader_refuses_truncated_and_missing(tmp_path):
    path = _write_ref(tmp_path / "ref.npz")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DamagedFileError, match="cannot be read.*download it again"):
        imagenet.load_reference(path)
    assert os.path.getsize(path) == len(data) // 2  # the user's file is left as it was
    with pytest.raises(FileNotFoundError, match="reference batch not found"):
        imagenet.load_reference(tmp_path / "absent.npz")


# ------------------------------------------------------------------------------- Inception heads and evaluator


@pytest.fixture(scope="module")
def state_dict():
    spec = importlib.util.spec_from_file_location("mk", os.path.join(FIX, "make_inception_fixture.py"))
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    with open(os.path.join(INC, "keys.json")) as f:
        meta = json.load(f)
    sd = mk.make_random_state_dict(meta["keys"], meta["seed"])
    assert mk.state_dict_digest(sd, meta["keys"]) == meta["sha256"]
    return sd


def test_heads_match_pytorch_fid_pool_and_numpy_fc(state_dict):
    """pool = pytorch-fid's pool3 (fixture); logits = pool3 @ fc.weight.T in NumPy (no bias, as ADM);
    spatial = the first 7 channels of Mixed_6d's branch1x1, flattened in HWC order."""
    module = inc.InceptionV3(heads=True)
    variables = inc_weights.convert_state_dict(state_dict, module)
    data = np.load(os.path.join(INC, "network.npz"))
    x = jnp.asarray(np.transpose(data["x"], (0, 2, 3, 1)))
    out, inter = jax.jit(lambda v, x: module.apply(v, x, capture_intermediates=lambda m, _: m.name == "branch1x1",
                                                    mutable=["intermediates"]))(variables, x)
    pool_err = np.abs(np.asarray(out["pool"]) - data["features"]).max()
    assert pool_err < 2e-5, pool_err
    want_logits = data["features"].astype(np.float64) @ state_dict["fc.weight"].T.astype(np.float64)
    logit_err = np.abs(np.asarray(out["logits"]) - want_logits).max()
    assert out["logits"].shape == (2, 1008) and logit_err < 1e-4, logit_err
    b1x1 = np.asarray(inter["intermediates"]["Mixed_6d"]["branch1x1"]["__call__"][0])
    assert b1x1.shape == (2, 17, 17, 192)
    np.testing.assert_array_equal(np.asarray(out["spatial"]), b1x1[..., :7].reshape(2, -1))
    assert out["spatial"].shape == (2, imagenet.SPATIAL_DIM)


def test_heads_need_fc_weight(state_dict):
    no_fc = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    with pytest.raises(ValueError, match="missing key: fc.weight"):
        inc_weights.convert_state_dict(no_fc, inc.InceptionV3(heads=True))
    inc_weights.convert_state_dict(no_fc)  # the pool3 network does not need it


def test_evaluator_closed_forms(tmp_path, state_dict, monkeypatch):
    """Samples = the reference images: precision = recall = 1, and the Frechet distances get the samples' and the
    file's statistics (fid.frechet_distance itself is tested in test_fid.py; its 2048-d sqrtm takes minutes on
    two cores, so it is recorded here, not run)."""
    weights = tmp_path / "inception.safetensors"
    tensor_files.write(weights, state_dict)
    images = np.random.default_rng(5).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    ev = imagenet.ImageNetEvaluator(_write_ref(tmp_path / "placeholder.npz", arr_0=images), weights, batch_size=4)
    acts = ev.activations([images[:5], images[5:]])
    pool3 = inc.InceptionV3(resize_input=False, normalize_input=False)
    want_pool = jax.jit(pool3.apply)(inc_weights.convert_state_dict(state_dict), imagenet.adm_input(jnp.asarray(images)))
    np.testing.assert_allclose(acts["pool"], np.asarray(want_pool), atol=2e-5)
    signed = (images.astype(np.float32) + 0.5) / 127.5 - 1.0  # ADM's float -> uint8 truncates: back to `images`
    np.testing.assert_array_equal(ev.activations(signed)["pool"], acts["pool"])
    rng = np.random.default_rng(6)
    stats = {"mu": rng.normal(size=2048), "sigma": np.eye(2048), "mu_s": rng.normal(size=2023), "sigma_s": np.eye(2023)}
    ev = imagenet.ImageNetEvaluator(_write_ref(tmp_path / "ref.npz", arr_0=images, **stats), weights, batch_size=4)
    calls = []
    monkeypatch.setattr(imagenet.fid, "frechet_distance", lambda *a: calls.append(a) or float(len(calls)))
    got = ev.metrics(images)
    assert (got["precision"], got["recall"]) == (1.0, 1.0)
    assert got["inception_score"] == pytest.approx(imagenet.inception_score(acts["logits"]))
    assert (got["fid"], got["sfid"]) == (1.0, 2.0) and len(calls) == 2
    for (mu1, s1, mu2, s2), name, suffix in zip(calls, ("pool", "spatial"), ("", "_s")):
        np.testing.assert_allclose(mu1, acts[name].mean(0), atol=1e-5)
        np.testing.assert_allclose(s1, np.cov(acts[name], rowvar=False), atol=1e-5)
        np.testing.assert_array_equal(mu2, stats["mu" + suffix])
        np.testing.assert_array_equal(s2, stats["sigma" + suffix])
