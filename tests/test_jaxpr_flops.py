"""The plan's jaxpr FLOP counter (amd_jax/plan/jaxpr_flops.py) against closed forms: matmuls, convolutions, scans
(length x body), gradients (2 more matmuls per matmul), remat (the recomputed forward), loops with a traced trip
count (once, reported), shard_map (the per-device body x devices)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from amd_jax.parallel import mesh as mesh_lib
from amd_jax.plan import jaxpr_flops

B, N, L = 16, 32, 5
MATMUL = 2 * B * N * N  # one [B, N] @ [N, N]


def _count(f, *args):
    return jaxpr_flops.count(jax.make_jaxpr(f)(*args))


def _layer(x, w):
    return jnp.tanh(x @ w)


@pytest.fixture
def xw():
    return jnp.ones((B, N)), jnp.ones((L, N, N))


def test_matmuls_scans_and_gradients(xw):
    x, w = xw
    loop = lambda w, x: jnp.sum(jax.lax.fori_loop(0, L, lambda i, h: _layer(h, w[i]), x))  # static: a scan
    scan = lambda w, x: jnp.sum(jax.lax.scan(lambda h, wi: (_layer(h, wi), None), x, w)[0])
    remat = lambda w, x: jnp.sum(jax.lax.scan(jax.checkpoint(lambda h, wi: (_layer(h, wi), None)), x, w)[0])
    assert _count(lambda x, w: x @ w[0], x, w).flops == MATMUL
    assert _count(loop, w, x).flops == _count(scan, w, x).flops == L * MATMUL
    assert _count(jax.grad(scan), w, x).flops == 3 * L * MATMUL  # fwd + dW + dh (a scan's body is uniform)
    assert _count(jax.grad(remat, argnums=(0, 1)), w, x).flops == 4 * L * MATMUL  # + the recomputed forward


def test_convolution():
    x, k = jnp.ones((2, 8, 10, 10)), jnp.ones((6, 4, 3, 3))  # NCHW, OIHW with 2 groups: 4 input features each
    conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", feature_group_count=2)
    assert _count(conv, x, k).flops == 2 * (2 * 6 * 10 * 10) * 9 * 4


def test_traced_loops_are_counted_once_and_reported(xw):
    x, w = xw
    dynamic = lambda w, x, k: jax.lax.fori_loop(0, k, lambda i, h: _layer(h, w[i]), x)
    got = _count(dynamic, w, x, jnp.int32(3))
    assert got.flops == MATMUL and got.traced_loops == 1
    branches = lambda x, w, p: jax.lax.cond(p, lambda: x @ w[0] @ w[1], lambda: x @ w[0])
    assert _count(branches, x, w, True).flops == 2 * MATMUL  # the costlier branch


def test_shard_map_counts_every_device(xw):
    x, w = xw
    mesh = mesh_lib.make_mesh(("data", "fsdp"), (2, 4))
    spec = jax.sharding.PartitionSpec(("data", "fsdp"))
    f = jax.shard_map(lambda x, w: x @ w, mesh=mesh, in_specs=(spec, jax.sharding.PartitionSpec()), out_specs=spec)
    assert _count(f, x, w[0]).flops == MATMUL


def test_sdxl_tiny_critic_step_agrees_with_xla_cost_analysis():
    """The trainer's critic step (sdxl_tiny, owned UNet unrolled, 8 devices): the jaxpr's matmul + convolution
    FLOPs per device within 2% of XLA's own count (which adds elementwise work; measured 0.689 against 0.685 GFLOP).
    With the layer stacks scanned and remat'd, XLA (on the CPU as on the TPU) counts each scan body once and misses
    the recomputation; the jaxpr count does not (measured 0.838 against XLA's 0.630)."""
    import os

    from amd_jax.config import load
    from amd_jax.session import Session

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    counts = {}
    for scan in (False, True):
        overrides = {"mesh.shape": (2, 4), "model.unet_impl": "owned", "model.unet_scan": scan,
                     "model.unet_remat": "block" if scan else "none"}
        session = Session(load(os.path.join(root, "configs", "sdxl_tiny.py"), overrides), None, abstract=True)
        state, frozen, batch = session.abstract_state_args(), session.abstract_frozen(), session.abstract_batch()
        jitted, args = session.step_programs(frozen, state, batch)["critic"]
        traced = jitted.trace(*args)
        cost = traced.lower().compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        counts[scan] = (jaxpr_flops.count(traced.jaxpr).flops / session.mesh.size, float(cost["flops"]))
    print("critic GFLOP/device (jaxpr, XLA):", {k: tuple(round(v / 1e9, 3) for v in c) for k, c in counts.items()})
    jaxpr, xla = counts[False]
    assert abs(jaxpr / xla - 1) < 0.02
    assert counts[True][0] > jaxpr > counts[True][1]  # remat recomputes; XLA counts scan bodies once
