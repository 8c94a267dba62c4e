"""Throughput of the Flax FID InceptionV3 feature pass (random weights; timing only).

    python -m amd_jax.tools.bench_inception --batch=16 --size=299 --iters=5

Compiles once, then times ``iters`` jitted forward passes of [batch, size, size, 3] float32 images and prints
images/s (compile time reported separately), plus images per process-CPU-second, which stays meaningful when
other jobs share the cores. ``--size`` other than 299 also times the built-in bilinear resize.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from amd_jax import cli
from amd_jax.models.inception.network import InceptionV3

_BATCH = flags.DEFINE_integer("batch", 16, "Images per forward pass.")
_SIZE = flags.DEFINE_integer("size", 299, "Input height = width (other than 299 also times the resize to 299).")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed forward passes after the compiling one.")


def random_variables(model, hw, seed=0):
    """He-uniform kernels, unit BN scale/var, zero bias/mean, from eval_shape (no costly init compile)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32))
    rng = np.random.default_rng(seed)

    def make(path, s):
        leaf = path[-1].key
        if leaf == "kernel":
            a = np.sqrt(6.0 / np.prod(s.shape[:-1]))
            return jnp.asarray(rng.uniform(-a, a, s.shape).astype(np.float32))
        return jnp.ones(s.shape, s.dtype) if leaf in ("scale", "var") else jnp.zeros(s.shape, s.dtype)

    return jax.tree_util.tree_map_with_path(make, shapes)


def main(argv):
    del argv
    batch, size, iters = _BATCH.value, _SIZE.value, _ITERS.value
    model = InceptionV3()
    x = jax.random.uniform(jax.random.PRNGKey(1), (batch, size, size, 3), jnp.float32)
    variables = random_variables(model, x.shape[1:3])
    apply = jax.jit(model.apply)
    t0 = time.perf_counter()
    apply(variables, x).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        out = apply(variables, x)
    out.block_until_ready()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"backend={jax.default_backend()} devices={jax.device_count()} batch={batch} size={size} "
          f"features={tuple(out.shape)}")
    print(f"first call (compile+run) {compile_s:.1f} s; {iters} iters in {dt:.2f} s: "
          f"{batch * iters / dt:.1f} images/s (wall); process CPU time {cpu:.1f} s = "
          f"{batch * iters / cpu:.2f} images per CPU-second (load-independent)")


if __name__ == "__main__":
    cli.run(main)
