"""FID stack against independent references: pytorch-fid / clean-fid outputs committed as fixtures, closed forms.

Fixtures come from tests/fixtures/make_inception_fixture.py (torch + pytorch-fid 0.3.0 + clean-fid). The
Inception weights are not committed: that script's numpy-only ``make_random_state_dict`` regenerates them here
and a SHA-256 in keys.json proves they are the ones torch used.
"""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import pdist

from amd_jax.metrics import fid
from amd_jax.models.inception import network as inc
from amd_jax.models.inception import weights as inc_weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(os.path.dirname(__file__), "fixtures")
INC = os.path.join(FIX, "inception")


def _maker():
    spec = importlib.util.spec_from_file_location("make_inception_fixture",
                                                  os.path.join(FIX, "make_inception_fixture.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def meta():
    with open(os.path.join(INC, "keys.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def state_dict(meta):
    mk = _maker()
    sd = mk.make_random_state_dict(meta["keys"], meta["seed"])
    assert mk.state_dict_digest(sd, meta["keys"]) == meta["sha256"], (
        "regenerated weights differ from the ones the fixtures were made with (numpy RNG stream changed?): "
        "rerun tests/fixtures/make_inception_fixture.py")
    return sd


@pytest.fixture(scope="module")
def variables(state_dict):
    return inc_weights.convert_state_dict(state_dict)


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


# ------------------------------------------------------------------------------------------- network parity

BLOCK_MODULES = {
    "Conv2d_1a_3x3": lambda: inc.BasicConv2d(32, (3, 3), (2, 2)),
    "Mixed_5b": lambda: inc.FIDInceptionA(32),
    "Mixed_6a": lambda: inc.InceptionB(),
    "Mixed_6b": lambda: inc.FIDInceptionC(128),
    "Mixed_7a": lambda: inc.InceptionD(),
    "Mixed_7b": lambda: inc.FIDInceptionE("avg"),
    "Mixed_7c": lambda: inc.FIDInceptionE("max"),
}


@pytest.mark.parametrize("name", list(BLOCK_MODULES))
def test_block_matches_pytorch_fid(name, state_dict):
    data = np.load(os.path.join(INC, "blocks.npz"))
    x, want = _nhwc(data[f"{name}/x"]), _nhwc(data[f"{name}/y"])
    module = BLOCK_MODULES[name]()
    sub = {k[len(name) + 1:]: v for k, v in state_dict.items() if k.startswith(name + ".")}
    v = inc_weights.convert_state_dict(sub, module, input_hw=x.shape[1:3], in_channels=x.shape[3])
    got = np.asarray(jax.jit(module.apply)(v, x))
    assert got.shape == want.shape
    err = np.abs(got - want).max()
    assert err < 2e-5 * max(1.0, np.abs(want).max()), f"{name}: max abs diff {err}"


def test_network_matches_pytorch_fid(variables):
    data = np.load(os.path.join(INC, "network.npz"))
    got = np.asarray(jax.jit(inc.InceptionV3().apply)(variables, jnp.asarray(_nhwc(data["x"]))))
    want = data["features"]
    assert got.shape == (2, inc.FEATURE_DIM) and got.dtype == np.float32
    err = np.abs(got - want).max()
    assert err < 2e-5, f"pool3 features: max abs diff {err}"


@pytest.mark.parametrize("size", [(11, 29), (40, 9)])
def test_resize_matches_torch_interpolate(size):
    data = np.load(os.path.join(INC, "network.npz"))
    got = np.asarray(inc.resize_bilinear_torch(jnp.asarray(_nhwc(data["resize_x"])), size))
    np.testing.assert_allclose(got, _nhwc(data[f"resize_{size[0]}x{size[1]}"]), rtol=0, atol=2e-6)
    x = jnp.asarray(_nhwc(data["resize_x"]))
    assert inc.resize_bilinear_torch(x, x.shape[1:3]) is x


def test_converter_accepts_pytorch_fid_key_set(meta, state_dict, variables):
    ignored = {k for k, _, _ in meta["keys"] if k.startswith("fc.") or k.endswith("num_batches_tracked")}
    assert ignored and len(ignored) == 2 + sum(k.endswith("num_batches_tracked") for k, _, _ in meta["keys"])
    want = {k: tuple(s) for k, s, _ in meta["keys"] if k not in ignored}
    assert inc_weights.torch_key_shapes() == want
    shapes = jax.eval_shape(lambda: inc.InceptionV3().init(jax.random.PRNGKey(0), jnp.zeros((1, 299, 299, 3))))
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(variables)
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda s, v: s.shape == v.shape, shapes, variables)))
    k = "Mixed_6b.branch7x7_2.conv.weight"  # (1, 7) conv: OIHW -> HWIO
    np.testing.assert_array_equal(variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
                                  state_dict[k].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"],
                                  state_dict["Mixed_7c.branch_pool.bn.running_var"])


def test_converter_names_every_problem(state_dict):
    bad = dict(state_dict)
    del bad["Mixed_5b.branch1x1.conv.weight"]
    bad["Mixed_5b.extra.weight"] = np.zeros(3, np.float32)
    bad["Conv2d_1a_3x3.bn.running_mean"] = np.zeros(31, np.float32)
    bad["Mixed_7c.branch_pool.conv.weight"] = np.zeros((192, 2048), np.float32)
    with pytest.raises(ValueError) as e:
        inc_weights.convert_state_dict(bad)
    msg = str(e.value)
    assert "4 problems" in msg
    assert "missing key: Mixed_5b.branch1x1.conv.weight" in msg
    assert "unexpected key: Mixed_5b.extra.weight" in msg
    assert "Conv2d_1a_3x3.bn.running_mean has shape (31,), expected (32,)" in msg
    assert "Mixed_7c.branch_pool.conv.weight has shape (192, 2048), expected (192, 2048, 1, 1)" in msg


def test_load_inception_from_file(tmp_path, state_dict, variables):
    from safetensors.numpy import save_file

    path = tmp_path / "inception_fid.safetensors"
    save_file({k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}, str(path))
    module, v = inc_weights.load_inception(str(path))
    assert isinstance(module, inc.InceptionV3)
    jax.tree_util.tree_map(np.testing.assert_array_equal, v, variables)
    with pytest.raises(FileNotFoundError, match="convert_inception"):
        inc_weights.load_inception(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="torch pickle"):
        (tmp_path / "w.pth").write_bytes(b"x")
        inc_weights.load_inception(str(tmp_path / "w.pth"))


# torch.load for the converter's subprocess (torch is not installed here): reads the .pth the test wrote with numpy
_TORCH_LOAD_STANDIN = """import numpy as np


class _Tensor:
    def __init__(self, a):
        self.a = a

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a


def load(path, map_location=None, weights_only=False):
    with np.load(path) as f:
        return {k: _Tensor(f[k]) for k in f.files}
"""


def test_convert_inception_command_line(tmp_path, state_dict, variables):
    """`python -m amd_jax.tools.convert_inception --src=... --out=...` with paths relative to the working directory:
    the file it writes loads (load_inception) to exactly the variables of the state dict it was given; an --out
    of another type is refused before the .pth is read. Only torch.load is a stand-in (see above)."""
    (tmp_path / "standin").mkdir()
    (tmp_path / "standin" / "torch.py").write_text(_TORCH_LOAD_STANDIN)
    with open(tmp_path / "pt_inception.pth", "wb") as f:
        np.savez(f, **state_dict)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(tmp_path / "standin"), REPO])}

    def convert(*args):
        return subprocess.run([sys.executable, "-m", "amd_jax.tools.convert_inception", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    out = convert("--src=pt_inception.pth", "--out=inception_fid.safetensors")
    assert out.returncode == 0, out.stderr[-3000:]
    kept = sum(not k.endswith("num_batches_tracked") for k in state_dict)  # the BN step counters are dropped
    assert out.stdout.strip() == f"wrote {kept} tensors to {tmp_path / 'inception_fid.safetensors'}"
    _, loaded = inc_weights.load_inception(str(tmp_path / "inception_fid.safetensors"))
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)
    out = convert("--src=missing.pth", "--out=inception_fid.bin")
    assert out.returncode == 1 and "--out must end in .safetensors or .npz" in out.stderr, out.stderr


def test_network_rejects_bad_input(variables):
    with pytest.raises(ValueError, match="NHWC"):
        inc.InceptionV3().apply(variables, jnp.zeros((1, 3, 32, 32)))


# ------------------------------------------------------------------------------------------- Frechet distance


def _rotation(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


@pytest.mark.parametrize("rotate", [False, True])
def test_frechet_closed_form_commuting(rotate):
    rng = np.random.default_rng(1)
    d = 12
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    q = _rotation(d, 2) if rotate else np.eye(d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("tag", ["full", "lowrank"])
def test_frechet_matches_pytorch_fid(tag):
    data = np.load(os.path.join(INC, "stats.npz"))
    mu1, s1 = fid.feature_statistics(data[f"{tag}/a"])
    mu2, s2 = fid.feature_statistics(data[f"{tag}/b"])
    for got, key in [(mu1, "mu1"), (s1, "sigma1"), (mu2, "mu2"), (s2, "sigma2")]:
        np.testing.assert_allclose(got, data[f"{tag}/{key}"], rtol=1e-12, atol=1e-12)
    assert s1.dtype == np.float64
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(float(data[f"{tag}/fd"]), rel=1e-7)
    assert fid.fid_from_features(data[f"{tag}/a"], data[f"{tag}/b"]) == pytest.approx(float(data[f"{tag}/fd"]),
                                                                                        rel=1e-7)


def test_frechet_eps_offset_and_imaginary_check(monkeypatch):
    d, eps = 5, 1e-3
    a, b = np.arange(1.0, d + 1), np.full(d, 2.0)
    real = fid._sqrtm
    calls = []

    def first_call_inf(m):
        calls.append(m)
        return np.full_like(m, np.inf) if len(calls) == 1 else real(m)

    monkeypatch.setattr(fid, "_sqrtm", first_call_inf)
    with pytest.warns(UserWarning, match="singular product"):
        got = fid.frechet_distance(np.zeros(d), np.diag(a), np.zeros(d), np.diag(b), eps=eps)
    # sqrt of the offset product, but the traces of the un-offset covariances (as pytorch-fid)
    want = a.sum() + b.sum() - 2 * np.sqrt((a + eps) * (b + eps)).sum()
    assert len(calls) == 2 and got == pytest.approx(want, rel=1e-10)

    monkeypatch.setattr(fid, "_sqrtm", lambda m: real(m) + 1e-2j * np.eye(d))
    with pytest.raises(ValueError, match="Imaginary component"):
        fid.frechet_distance(np.zeros(d), np.diag(a), np.zeros(d), np.diag(b))
    monkeypatch.setattr(fid, "_sqrtm", lambda m: real(m) + 1e-5j * np.eye(d))
    assert fid.frechet_distance(np.zeros(d), np.diag(a), np.zeros(d), np.diag(b)) == pytest.approx(
        np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-9)


def test_frechet_and_stats_reject_bad_shapes():
    with pytest.raises(ValueError, match="mean vectors"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(3))
    with pytest.raises(ValueError, match="covariances"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="N >= 2"):
        fid.feature_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        fid.feature_statistics(np.array([[0.0, np.nan], [1.0, 2.0]]))


def test_stats_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    mu, sigma = fid.feature_statistics(rng.normal(size=(40, 6)).astype(np.float32))
    path = tmp_path / "ref" / "coco_clean.npz"
    fid.save_stats(str(path), mu, sigma, num_images=40, mode="clean")
    mu2, sigma2 = fid.load_stats(str(path))
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    assert mu2.dtype == mu.dtype and sigma2.dtype == sigma.dtype
    with np.load(path) as f:  # pytorch-fid reads f['mu'], f['sigma']
        assert f["mu"].shape == (6,) and str(f["mode"]) == "clean" and int(f["num_images"]) == 40
    np.savez(tmp_path / "bad.npz", m=mu)
    with pytest.raises(ValueError, match="expected 'mu' and 'sigma'"):
        fid.load_stats(str(tmp_path / "bad.npz"))
    with pytest.raises(FileNotFoundError):
        fid.load_stats(str(tmp_path / "nope.npz"))
    with pytest.raises(ValueError, match="sigma"):
        fid.save_stats(str(tmp_path / "x.npz"), mu, sigma[:3])


# -------------------------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("tag", ["down", "up"])
def test_clean_resize_matches_clean_fid(tag):
    data = np.load(os.path.join(INC, "clean.npz"))
    x, want = data[f"{tag}/x"], data[f"{tag}/y"]
    got = fid.clean_resize(x, size=want.shape[:2])
    assert got.shape == (1, *want.shape) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-4)


def test_clean_resize_is_float_bicubic_not_uint8():
    yy, xx = np.mgrid[0:64, 0:48]
    smooth = np.stack([xx * 5, yy * 3 + xx, 128 + 100 * np.sin(xx / 5) * np.cos(yy / 7)], -1).astype(np.uint8)
    noise = np.random.default_rng(4).integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    img = np.stack([smooth, noise])
    got = fid.clean_resize(img, (299, 299))
    ref = np.asarray(Image.fromarray(smooth).resize((299, 299), Image.BICUBIC), np.float32)  # PIL's uint8 path
    assert got.shape == (2, 299, 299, 3) and got.min() >= 0 and got.max() <= 255
    # same filter: on a smooth image only PIL's uint8 fixed-point/rounding differs
    assert 0.01 < np.abs(got[0] - ref).max() < 1.5
    assert np.any(got != np.round(got))  # not re-quantised
    x = fid.preprocess(img, "clean")
    np.testing.assert_allclose(x, got / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(fid.preprocess(img, "pytorch-fid"), img.astype(np.float32) / 255.0)
    with pytest.raises(ValueError, match="mode"):
        fid.preprocess(img, "legacy")
    with pytest.raises(ValueError, match="uint8"):
        fid.clean_resize(img.astype(np.float32))
    with pytest.raises(ValueError, match="RGB"):
        fid.clean_resize(img[..., :1])


def test_extract_features_pads_to_fixed_batches():
    img = np.random.default_rng(5).integers(0, 256, size=(7, 8, 6, 3), dtype=np.uint8)
    seen = []

    def fn(b):
        seen.append(b.shape)
        return b.mean(axis=(1, 2))

    got = fid.extract_features(fn, [img[:5], img[5:]], batch_size=3)
    np.testing.assert_allclose(got, (img / 255.0).mean(axis=(1, 2)), rtol=1e-6)
    assert seen == [(3, 8, 6, 3)] * 3
    with pytest.raises(ValueError, match="batch_size"):
        fid.extract_features(fn, img, batch_size=0)


# ------------------------------------------------------------------------------------------------- diversity


def test_mean_pairwise_distance():
    f = np.random.default_rng(6).normal(size=(9, 17))
    assert fid.mean_pairwise_distance(f) == pytest.approx(pdist(f).mean(), rel=1e-12)
    c = 2.5  # n scaled one-hot vectors: every pair is c * sqrt(2) apart
    assert fid.mean_pairwise_distance(c * np.eye(6)) == pytest.approx(c * np.sqrt(2), rel=1e-12)
    assert fid.mean_pairwise_distance(np.ones((4, 3))) == 0.0
    with pytest.raises(ValueError, match="N >= 2"):
        fid.mean_pairwise_distance(np.ones((1, 3)))


def test_diversity_by_group():
    rng = np.random.default_rng(7)
    f = rng.normal(size=(10, 5))
    g = np.array(["a", "b"] * 5)
    mean, per = fid.diversity_by_group(f, g)
    assert per["a"] == pytest.approx(pdist(f[0::2]).mean()) and per["b"] == pytest.approx(pdist(f[1::2]).mean())
    assert mean == pytest.approx((per["a"] + per["b"]) / 2)
    with pytest.raises(ValueError, match="group 3 has 1 sample"):
        fid.diversity_by_group(f, np.array([1, 1, 2, 2, 2, 1, 1, 2, 2, 3]))
    with pytest.raises(ValueError, match="groups must have shape"):
        fid.diversity_by_group(f, g[:4])
