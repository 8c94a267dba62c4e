"""Throughput of the Flax FID InceptionV3 feature pass (random weights; timing only).

    python -m amd_jax.eval.bench_inception --batch 16 --size 299 --iters 5

Compiles once, then times ``iters`` jitted forward passes of [batch, size, size, 3] float32 images and prints
images/s (compile time reported separately), plus images per process-CPU-second, which stays meaningful when
other jobs share the cores. ``--size`` other than 299 also times the built-in bilinear resize.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from amd_jax.eval.inception import InceptionV3


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


def main(argv=None):
    ap = argparse.ArgumentParser(description="FID InceptionV3 images/s")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args(argv)
    model = InceptionV3()
    x = jax.random.uniform(jax.random.PRNGKey(1), (args.batch, args.size, args.size, 3), jnp.float32)
    variables = random_variables(model, x.shape[1:3])
    apply = jax.jit(model.apply)
    t0 = time.perf_counter()
    apply(variables, x).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.iters):
        out = apply(variables, x)
    out.block_until_ready()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"backend={jax.default_backend()} devices={jax.device_count()} batch={args.batch} size={args.size} "
          f"features={tuple(out.shape)}")
    print(f"first call (compile+run) {compile_s:.1f} s; {args.iters} iters in {dt:.2f} s: "
          f"{args.batch * args.iters / dt:.1f} images/s (wall); process CPU time {cpu:.1f} s = "
          f"{args.batch * args.iters / cpu:.2f} images per CPU-second (load-independent)")


if __name__ == "__main__":
    main()
