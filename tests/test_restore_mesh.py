"""A checkpoint written on one mesh restores onto another: data=2,fsdp=4 (parameters really FSDP-sharded) onto
fsdp=8 and onto 2 devices; the restored parameters equal the saved ones exactly and training continues, with the
step the original mesh would have taken (within float tolerance)."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from amd_jax.loop import train
from amd_jax.session import Session
from tiny import tiny_toy2d_config


def _config(shape):
    config = tiny_toy2d_config()  # fsdp_min_size=256: the MLP kernels are sharded over fsdp
    config.mesh.shape = shape
    config.log.sample_every, config.eval.at_end = 0, False
    return config


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Trains 4 steps on data=2,fsdp=4 (checkpoint at 4), then takes step 5 from that checkpoint on the same mesh."""
    workdir = tmp_path_factory.mktemp("mesh24")
    state = train(Session(_config((2, 4)), str(workdir)), stop_after=4)
    specs = {a.sharding.spec for a in jax.tree_util.tree_leaves(state.student)}
    assert P(None, "fsdp") in specs or P("fsdp", None) in specs or P("fsdp") in specs, specs
    host = jax.device_get(state)
    step5 = train(Session(_config((2, 4)), str(workdir)), stop_after=5)  # no checkpoint at 5 (every 4)
    return workdir, host, jax.device_get(step5)


@pytest.mark.parametrize("shape,ndev", [((1, 8), 8), ((1, 2), 2)], ids=["fsdp8", "two_devices"])
def test_restore_onto_another_mesh_and_continue(saved, shape, ndev):
    workdir, host, step5 = saved
    session = Session(_config(shape), str(workdir), devices=jax.devices()[:ndev])
    assert session.resume_step == 4  # the shape/dtype compatibility check passes across meshes
    state, meta = session.ckpt.restore(4, session.abstract_state, session.state_sh)
    assert meta["mesh"] == {"data": 2, "fsdp": 4}
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(host)):
        assert a.sharding.mesh.devices.size == ndev
        np.testing.assert_array_equal(np.asarray(a), b)  # exact: a checkpoint is bits, whatever the mesh
    assert any(len(a.sharding.device_set) == ndev and not a.sharding.is_fully_replicated
               for a in jax.tree_util.tree_leaves(state.student))

    out = train(session, stop_after=5)
    assert int(out.step) == 5
    for a, b in zip(_leaves(out), jax.tree_util.tree_leaves(step5)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(out.student), jax.tree_util.tree_leaves(host.student)))
