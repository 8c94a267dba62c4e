"""batching.sequential_chunks: the reward in sequential pieces of the batch (reward.chunks) gives the same rows as
the whole batch and keeps each device's rows on it. (What it saves is measured by the TPU plan: the XLA CPU
compiler reports no temporary bytes for such a program.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from amd_jax.batching import sequential_chunks
from amd_jax.parallel import mesh as mesh_lib


def _rowwise(w, x, cond):
    """A per-row function of an image batch and a dict of per-row conditions, with a wide intermediate."""
    h = jnp.tanh(jnp.einsum("bij,jk->bik", x, w))  # [b, 64, 512], materialised for the second matmul
    y = jnp.einsum("bik,jk->bij", h, w)
    return jnp.sum(y ** 2, axis=(1, 2)) + cond["label"] * cond["scale"][:, 0]


@pytest.mark.parametrize("chunks", [1, 2, 4])
def test_same_rows_as_the_whole_batch_on_a_mesh(chunks):
    mesh = mesh_lib.make_mesh(("data", "fsdp"), (2, 4))
    r = np.random.default_rng(0)
    w = jnp.asarray(r.standard_normal((32, 512)), jnp.float32)
    x = jnp.asarray(r.standard_normal((32, 64, 32)), jnp.float32)
    cond = {"label": jnp.arange(32.0), "scale": jnp.asarray(r.uniform(size=(32, 3)), jnp.float32)}
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    x, cond = jax.device_put((x, cond), rows)
    f = jax.jit(lambda x, cond: sequential_chunks(lambda x, c: _rowwise(w, x, c), chunks, x, cond))
    got = f(x, cond)
    np.testing.assert_allclose(got, _rowwise(w, x, cond), rtol=1e-6)
    assert got.sharding.is_equivalent_to(rows, 1)
    if chunks > 1:  # each piece is one row per device: no collective moves rows between devices
        hlo = f.lower(x, cond).compile().as_text()
        assert not any(op in hlo for op in ("all-to-all", "all-gather", "collective-permute"))


def test_chunks_must_divide_the_batch():
    with pytest.raises(ValueError, match="3 pieces .chunks. do not divide the batch of 8"):
        sequential_chunks(lambda x: x, 3, jnp.zeros((8, 2)))


def _seeded(tree, seed):
    """Every float leaf of an abstract tree filled with seeded normal values (scale 0.2), integer leaves with
    seeded values in [0, 8): rows of a batch differ for real, not by rounding."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    r = np.random.default_rng(seed)
    out = []
    for a in leaves:
        if jnp.issubdtype(a.dtype, jnp.floating):
            v = (0.2 * r.standard_normal(a.shape)).astype(np.float32)
        else:
            v = r.integers(0, 8, a.shape)
        out.append(jax.device_put(jnp.asarray(v, a.dtype), a.sharding))
    return jax.tree_util.tree_unflatten(treedef, out)


def test_sdxl_tiny_rewards_in_chunks_equal_the_whole_batch():
    """The sample step of sdxl_tiny (VAE decode + the tiny HPS scorer) with reward.chunks=2 on a (2, 2) mesh:
    the same rewards as reward.chunks=1, on seeded random weights and inputs whose rows truly differ."""
    import os

    from amd_jax.config import load
    from amd_jax.session import Session

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "sdxl_tiny.py")
    rewards = {}
    for chunks in (1, 2):
        config = load(path, {"mesh.shape": (2, 2), "global_batch": 8, "reward.chunks": chunks})
        session = Session(config, None, devices=jax.devices()[:4], abstract=True)
        state, frozen, batch = session.abstract_state_args(), session.abstract_frozen(), session.abstract_batch()
        real = _seeded((state, frozen, batch), seed=0)
        jitted, args = session.step_programs(real[1], real[0], real[2])["sample"]
        rewards[chunks] = np.asarray(jitted(*args)[1])
    # The rows differ by far more than the tolerance below, so a row mix-up between pieces would show.
    assert np.ptp(rewards[1]) > 1e-3 * np.abs(rewards[1]).max(), rewards[1]
    np.testing.assert_allclose(rewards[2], rewards[1], rtol=1e-5, atol=1e-6)
