"""Held-out evaluators for MNIST / digits: a project-trained CNN classifier and metrics in its feature space.

The CNN is trained by the project on the dataset's TRAIN split (never seen by distillation; the AMD reward is a
different model), cached under a directory given in the config (``eval.classifier_dir``) and trained on first use.
Metrics of generated samples x [N, H, W, 1] with their conditioning labels:
  - class_accuracy: fraction classified as their conditioning label by the CNN
  - fid:            Frechet distance between CNN penultimate features of x and of the real TEST set
                    (``amd_jax.metrics.fid.frechet_distance``; real test set against itself = 0)
  - precision / recall: k-NN manifolds (Kynkaanniemi et al. 2019, k=3) in the same feature space
  - diversity:      mean pairwise feature distance within a class, averaged over classes
                    (``amd_jax.metrics.fid.diversity_by_group``); diversity_ratio = that / the test set's own
  - reward_mean:    the training reward, for reference only
"""

from __future__ import annotations

import functools
import json
import logging
import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from amd_jax import batching, caches, paths
from amd_jax.data.mnist import ImageData
from amd_jax.errors import DamagedFileError
from amd_jax.metrics import fid as fid_lib
from amd_jax.metrics import grid
from amd_jax.metrics import knn

log = logging.getLogger(__name__)


class CNN(nn.Module):
    """conv-conv-pool-conv-pool-dense(features)-dense(classes); features are the post-ReLU penultimate layer."""

    num_classes: int = 10
    width: int = 32
    feature_dim: int = 128

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Conv(self.width, (3, 3))(x))
        h = nn.relu(nn.Conv(self.width, (3, 3))(h))
        h = nn.max_pool(h, (2, 2), (2, 2))
        h = nn.relu(nn.Conv(2 * self.width, (3, 3))(h))
        h = nn.max_pool(h, (2, 2), (2, 2))
        feats = nn.relu(nn.Dense(self.feature_dim)(h.reshape(h.shape[0], -1)))
        feats_d = nn.Dropout(0.3, deterministic=not train)(feats)
        return nn.Dense(self.num_classes)(feats_d), feats


def train_classifier(net: CNN, x, y, steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0):
    """Adam on cross-entropy with i.i.d. minibatches (pure function of seed); returns params."""
    params = net.init(jax.random.PRNGKey(seed), jnp.zeros((1, *x.shape[1:]), jnp.float32))["params"]
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, xb, yb, rng):
        def loss(p):
            logits, _ = net.apply({"params": p}, xb, train=True, rngs={"dropout": rng})
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        val, g = jax.value_and_grad(loss)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, val

    rng = np.random.default_rng(seed)
    for i in range(steps):
        idx = rng.integers(0, len(y), batch_size)
        params, opt, val = step(params, opt, x[idx], y[idx], jax.random.PRNGKey(i))
        if i % 500 == 0 or i == steps - 1:
            log.info("classifier step %d/%d loss %.4f", i + 1, steps, float(val))
    return params


class Evaluator:
    """The held-out classifier of one dataset, its test-set reference statistics and the metrics of samples."""

    def __init__(self, data: ImageData, directory: str, steps: int, feature_dim: int = 128, width: int = 32,
                 batch_size: int = 128, max_real: int = 10_000, seed: int = 0):
        self.data, self.net = data, CNN(data.num_classes, width, feature_dim)
        self._apply = jax.jit(lambda p, x: self.net.apply({"params": p}, x))
        self.params, self.report = self._load_or_train(epath.Path(paths.absolute(directory)), steps, batch_size, seed)
        idx = np.random.default_rng(seed).permutation(len(data.test_y))[:max_real]
        self.real_x, self.real_y = data.test_x[idx], data.test_y[idx]
        self.real_feats = self.features(self.real_x)
        self.real_stats = fid_lib.feature_statistics(self.real_feats)
        self.real_diversity = fid_lib.diversity_by_group(self.real_feats[:2000], self.real_y[:2000])[0]

    def _load_or_train(self, path: epath.Path, steps: int, batch_size: int, seed: int) -> tuple[dict, dict]:
        """(params, report) from `path`/classifier.msgpack and classifier.json; trained and saved when missing/damaged.

        Process 0 writes (the report first, the weights last: the weights' presence means the cache is complete);
        other processes load a complete cache or train their own copy (amd_jax.caches.load_or_build). The report
        holds the weights' per-array checksums (`checksum`, amd_jax.caches.checksums), verified on load; weights
        that do not match them or are non-finite are damaged (moved aside, retrained); non-finite ones are never
        written (NonFiniteError).
        """
        weights, report = path / "classifier.msgpack", path / "classifier.json"
        shape = (1, *self.data.image_shape)
        abstract = jax.eval_shape(lambda: self.net.init(jax.random.PRNGKey(0), jnp.zeros(shape))["params"])

        def load():
            params = flax.serialization.from_bytes(abstract, weights.read_bytes())
            mismatch = caches.tree_mismatch(params, abstract)
            info = json.loads(report.read_text())
            if not mismatch and not (isinstance(info, dict) and "test_accuracy" in info):
                mismatch = f"{report.name} holds no test_accuracy"
            if mismatch:
                raise DamagedFileError(mismatch)
            caches.verify(params, info.get("checksum"))
            return params, info

        def build():
            t0 = time.time()
            self.params = jax.device_get(train_classifier(self.net, self.data.train_x, self.data.train_y, steps,
                                                          batch_size, seed=seed))  # predict() uses it
            acc = float(np.mean(self.predict(self.data.test_x) == self.data.test_y))
            log.info("held-out classifier (%s): test accuracy %.4f", self.data.name, acc)
            return self.params, {"test_accuracy": acc, "num_test": int(len(self.data.test_y)), "train_steps": steps,
                                 "train_seconds": round(time.time() - t0, 1), "dataset": self.data.name}

        def save(value):
            record = caches.checksums(value[0], f"The held-out classifier's training ({steps} steps)", path,
                                      "Check the data (data.name and its files) and eval.classifier_steps.")
            caches.atomic_write_bytes(report, json.dumps({**value[1], "checksum": record}, indent=1).encode())
            caches.atomic_write_bytes(weights, flax.serialization.to_bytes(value[0]))

        return caches.load_or_build([weights, report], load, build, save, write=jax.process_index() == 0)

    def logits_and_features(self, x, batch: int = 500):
        logits, feats = batching.map_fixed_batches(functools.partial(self._apply, self.params),
                                                   np.asarray(x, np.float32), batch)  # fixed shape: one compile
        return logits, feats.astype(np.float64)

    def predict(self, x):
        return self.logits_and_features(x)[0].argmax(-1)

    def features(self, x):
        return self.logits_and_features(x)[1]

    def metrics(self, x, labels, rewards=None) -> dict:
        logits, feats = self.logits_and_features(x)
        labels = np.asarray(labels)
        n = min(len(feats), len(self.real_feats))  # equal set sizes: the k-NN radii depend on the set size
        prec, rec = knn.precision_recall(feats[:n], self.real_feats[:n])  # float64 features
        div = fid_lib.diversity_by_group(feats[:2000], labels[:2000])[0]
        out = {
            "class_accuracy": float(np.mean(logits.argmax(-1) == labels)),
            "fid": fid_lib.frechet_distance(*fid_lib.feature_statistics(feats), *self.real_stats),
            "precision": prec,
            "recall": rec,
            "diversity": div,
            "diversity_ratio": div / self.real_diversity,
            "num_samples": int(len(x)),
            "classifier_test_accuracy": self.report["test_accuracy"],
        }
        if rewards is not None:
            out["reward_mean"] = float(np.mean(rewards))
        return out


def sample_grid(x, labels, num_classes: int = 10, per_class: int = 10, scale: int = 2, zone=None) -> np.ndarray:
    """RGB uint8 grid: row c = the first `per_class` samples of class c; zone-flagged samples framed in red."""
    x = np.clip((np.asarray(x)[..., 0] + 1.0) * 127.5, 0, 255).astype(np.uint8)
    labels = np.asarray(labels)
    picked = [(i, (c, j)) for c in range(num_classes) for j, i in enumerate(np.flatnonzero(labels == c)[:per_class])]
    idx = np.array([i for i, _ in picked], np.int64)
    tiles = np.repeat(np.repeat(x[idx], scale, 1), scale, 2)[..., None].repeat(3, -1)  # scaled, gray -> RGB
    framed = None if zone is None else np.asarray(zone)[idx] > 0.5
    return grid.image_grid(tiles, per_class, rows=num_classes, cells=[cell for _, cell in picked], margin=2,
                           background=128, framed=framed)
