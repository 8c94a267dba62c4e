"""Conditioning computed on the device mesh (amd_jax/conditioning.py) and SDXL's use of it.

- MeshCondition alone: a toy encoder's output equals numpy's, comes back split over the batch axes whatever the
  input's placement, its parameters are sharded by the rules and placed once even when two threads start it.
- SDXL on 8 simulated devices (data=4 x fsdp=2, sdxl_tiny): the session's batches and evaluation conditions carry
  embeddings computed on the mesh that equal the text encoders' own one-device encoding of the same captions (the
  path before the move: SDXLTextEncoders.__call__); the encoders' kernels are FSDP-sharded; a run on precomputed
  embeddings has no condition and its batch is put_batch of the host batch, bit for bit.
"""

from __future__ import annotations

import os
import threading

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from amd_jax import tensor_files
from amd_jax.conditioning import Condition, MeshCondition
from amd_jax.config import load
from amd_jax.parallel import mesh as mesh_lib
from amd_jax.session import Session, put_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SDXL_TINY = os.path.join(ROOT, "configs", "sdxl_tiny.py")
BATCH_AXES = ("data", "fsdp")
TOL = 1e-5  # float32 encoders; the mesh's placement (FSDP-gathered kernels, other batch tiling) only reorders sums


def _mesh():
    return mesh_lib.make_mesh(BATCH_AXES, (4, 2))


def _spec(a):
    return tuple(a.sharding.spec)


# ------------------------------------------------------------------------------------------- generic
def test_mesh_condition_computes_on_the_batch_axes_and_places_params_once():
    mesh, loads = _mesh(), []
    rng = np.random.RandomState(0)
    w, x = rng.randn(64, 32).astype(np.float32), rng.randn(16, 64).astype(np.float32)

    def params():
        loads.append(1)
        return {"w": w}

    def apply(p, cond):
        return {"y": cond["x"] @ p["w"], "keep": cond["keep"]}

    cond_fn = MeshCondition(Condition(params=params, apply=apply), mesh, BATCH_AXES, min_size=2**10)
    host = {"x": x, "keep": np.arange(16, dtype=np.int32)}
    outs = [None, None]
    threads = [threading.Thread(target=lambda i=i: outs.__setitem__(i, cond_fn(put_batch(host, mesh, BATCH_AXES))))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replicated = jax.device_put(host, NamedSharding(mesh, PartitionSpec()))  # another placement of the input
    outs.append(cond_fn(replicated))
    assert len(loads) == 1  # the parameters were loaded and placed once
    assert _spec(cond_fn.params["w"]) == ("fsdp", None)  # 2048 elements >= min_size: FSDP-split by the rules
    for out in outs:
        np.testing.assert_allclose(np.asarray(out["y"]), x @ w, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(out["keep"]), host["keep"])
        assert _spec(out["y"])[0] == BATCH_AXES and _spec(out["keep"])[0] == BATCH_AXES


# ------------------------------------------------------------------------------------------- SDXL
@pytest.fixture(scope="module")
def sdxl_session(tmp_path_factory):
    assert jax.device_count() == 8
    return Session(load(SDXL_TINY), str(tmp_path_factory.mktemp("cond") / "run"))


@pytest.fixture(scope="module")
def host_encoders():
    """The SDXL text encoders as the data pipeline used them before: tokenize + jitted encode_ids on one device."""
    from amd_jax.models.sdxl.text import SDXLTextEncoders

    return SDXLTextEncoders.load(load(SDXL_TINY).model.path)


def _assert_encoded_like_host(cond, prompts, host_encoders):
    want_pe, want_te = (np.asarray(a) for a in host_encoders(prompts))
    diff_pe = float(np.abs(np.asarray(cond["prompt_embeds"]) - want_pe).max())
    diff_te = float(np.abs(np.asarray(cond["text_embeds"]) - want_te).max())
    print(f"max abs diff to the one-device encoders: prompt_embeds {diff_pe:.2e}, text_embeds {diff_te:.2e}")
    assert diff_pe <= TOL and diff_te <= TOL
    assert np.abs(want_pe).max() > 1e-2 and np.ptp(want_te, axis=0).max() > 1e-3  # real, prompt-dependent values


def test_sdxl_training_batches_are_encoded_on_the_mesh_like_the_host(sdxl_session, host_encoders):
    s = sdxl_session
    assert s.condition is not None and dict(s.mesh.shape) == {"data": 4, "fsdp": 2}
    bsz = s.c.global_batch
    for step in (0, 5):  # two batches: one compilation, different captions
        host = s.task.data.global_batch(step, bsz)
        assert set(host["cond"]) == {"input_ids", "input_ids_2", "reward_tokens", "time_ids"}
        assert host["cond"]["input_ids"].dtype == np.int32 and host["cond"]["input_ids"].shape == (bsz, 77)
        cond = s.batch(step)["cond"]
        assert set(cond) == {"prompt_embeds", "text_embeds", "reward_tokens", "time_ids"}  # the steps' keys
        assert all(_spec(a)[0] == BATCH_AXES for a in cond.values())
        _assert_encoded_like_host(cond, s.task.data.prompts(step, bsz), host_encoders)
        for k in ("reward_tokens", "time_ids"):  # host-made keys pass through unchanged
            np.testing.assert_array_equal(np.asarray(cond[k]), host["cond"][k])
    # the encoders' big kernels live FSDP-split on the mesh (the frozen-parameter rules), not on one device
    kernels = [a for a in jax.tree_util.tree_leaves(s.condition.params) if a.ndim == 2]
    split = [a for a in kernels if "fsdp" in _spec(a)]
    assert len(split) > len(kernels) // 2
    assert split[0].addressable_shards[0].data.size * 2 == split[0].size


def test_sdxl_eval_conditions_are_encoded_on_the_mesh_like_the_host(sdxl_session, host_encoders):
    from amd_jax.data.prompts import eval_prompts

    s = sdxl_session
    bsz = s.c.global_batch
    host = s.task.eval_conds(bsz)
    prompts, _ = eval_prompts(s.c, s.task.data, bsz)
    cond = s.condition(put_batch(host, s.mesh, s.batch_axes))  # what Session.generate hands the sampler
    _assert_encoded_like_host(cond, prompts, host_encoders)


def test_precomputed_embeddings_have_no_condition_and_batches_unchanged(tmp_path, host_encoders):
    from amd_jax.data import prompts as P
    from amd_jax.data.prompts import eval_prompts

    config = load(SDXL_TINY)
    n = len(P.read_captions(config.data.path))
    rng = np.random.RandomState(0)
    emb = {"prompt_embeds": rng.randn(n, 77, 96).astype(np.float32), "text_embeds": rng.randn(n, 64).astype(np.float32)}
    tensor_files.write(str(tmp_path / "emb.npz"), emb)
    config.data.embeddings = str(tmp_path / "emb.npz")
    s = Session(config, str(tmp_path / "run"))
    assert s.task.condition is None and s.condition is None
    want = put_batch(s.task.data.global_batch(2, config.global_batch), s.mesh, s.batch_axes)
    got = s.batch(2)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.sharding == b.sharding
    rows = [P.read_captions(config.data.path).index(p) for p in s.task.data.prompts(2, config.global_batch)]
    np.testing.assert_array_equal(np.asarray(got["cond"]["prompt_embeds"]), emb["prompt_embeds"][rows])
    # its evaluation conditions are encoded on the host (Assets.encode: the captions need not be in the file)
    bsz = config.global_batch
    _assert_encoded_like_host(s.task.eval_conds(bsz), eval_prompts(s.c, s.task.data, bsz)[0], host_encoders)
