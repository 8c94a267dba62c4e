"""Sequence (context) parallelism of the Wan transformer (amd_jax/parallel/context.py) on 8 simulated CPU devices:
the token-split transformer equals the unsplit one on random weights in float32, forward and gradient, for
all-to-all ('ulysses') and ring attention; bad sizes are refused in one line before anything compiles; and the
Wan2.1-1.3B video of 81x480x832 (32,760 tokens) traces and lowers on an abstract TPU mesh with context 4 and 8.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from amd_jax.errors import ConfigError
from amd_jax.models.wan import transformer as wan
from amd_jax.parallel import mesh as mesh_lib
from amd_jax.parallel.context import SequenceParallel
from amd_jax.parallel.sharding import activation_rules, tree_shardings

# float32 on CPU: measured forward max abs diff <= 9.5e-7 (outputs up to |4.1|) and gradients <= 9.4e-7 of each leaf's
# largest entry (largest 692); the same reductions in another order, so 1e-5 for both.
TOL = 1e-5
AXES = ("data", "fsdp", "context")
TINY = wan.WanConfig(num_attention_heads=4, attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16,
                     freq_dim=16, ffn_dim=32, num_layers=2, dtype="float32")


@pytest.fixture(scope="module")
def problem():
    """Random weights and inputs (batch 4, latents 2x8x8: 2x4x4 = 32 tokens) and the unsplit forward / gradient."""
    params = wan.init_params(TINY, jax.random.PRNGKey(0))
    r = np.random.default_rng(0)
    latents = r.normal(size=(4, 2, 8, 8, 4)).astype(np.float32)
    timestep = np.array([300.0, 800.0, 10.0, 999.0], np.float32)
    text = r.normal(size=(4, 5, 16)).astype(np.float32)
    return params, latents, timestep, text, _value_and_grad(wan.WanTransformer(TINY))(params, latents, timestep, text)


def _value_and_grad(net):
    def loss(params, latents, timestep, text):
        out = net.apply({"params": params}, latents, timestep, text)
        return jnp.sum(out**2), out

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


@pytest.mark.parametrize("shape,method,collective", [
    ((2, 1, 4), "ulysses", "all_to_all"),
    ((2, 2, 2), "ring", "collective_permute"),   # FSDP-sharded parameters too
    ((1, 1, 8), "ring", "collective_permute"),   # context 8 over 4 heads: only the ring can
], ids=["data2-context4-ulysses", "data2-fsdp2-context2-ring", "context8-ring"])
def test_split_tokens_equal_unsplit(problem, shape, method, collective):
    params, latents, timestep, text, ((_, want), (want_dp, want_dx)) = problem
    mesh = mesh_lib.make_mesh(AXES, shape)
    net = wan.WanTransformer(TINY, sequence=SequenceParallel(mesh, method))
    params = jax.device_put(params, tree_shardings(params, mesh, min_size=64))
    fn = _value_and_grad(net)
    assert collective in fn.lower(params, latents, timestep, text).as_text()  # the attention did go across devices
    (_, out), (dp, dx) = fn(params, latents, timestep, text)
    fwd = float(np.max(np.abs(out - want)))
    grads = [(jax.tree_util.keystr(path), float(np.max(np.abs(g - w)) / np.abs(w).max())) for (path, g), w in
             zip(jax.tree_util.tree_leaves_with_path((dp, dx)), jax.tree_util.tree_leaves((want_dp, want_dx)))]
    worst = max(grads, key=lambda g: g[1])
    print(f"{shape} {method}: forward max abs diff {fwd:.1e}; gradient max diff / leaf max {worst[1]:.1e} {worst[0]}")
    assert fwd < TOL
    assert worst[1] < TOL, worst


@pytest.mark.parametrize("shape,method,latents,match", [
    ((1, 1, 8), "ring", (4, 3, 8, 6, 4), "size 8 does not divide the 36 tokens"),
    ((1, 1, 8), "ulysses", (4, 2, 8, 8, 4), "splits the 4 heads over the context axis 'context' of size 8"),
    ((2, 2, 2), "ulysses", (2, 2, 8, 8, 4), "batch of 2 does not split over the batch axes"),
], ids=["tokens", "heads", "batch"])
def test_bad_sizes_are_refused_in_one_line_before_compiling(shape, method, latents, match):
    net = wan.WanTransformer(TINY, sequence=SequenceParallel(mesh_lib.make_mesh(AXES, shape), method))
    args = (wan.abstract_params(TINY), jax.ShapeDtypeStruct(latents, jnp.float32),
            jax.ShapeDtypeStruct(latents[:1], jnp.float32), jax.ShapeDtypeStruct((latents[0], 5, 16), jnp.float32))
    with pytest.raises(ConfigError, match=match) as e:
        jax.eval_shape(lambda p, x, t, c: net.apply({"params": p}, x, t, c), *args)
    assert "\n" not in str(e.value)


def test_a_mesh_without_context_axis_splits_the_batch_only(problem):
    """The same rules on a data x fsdp mesh: tokens not split, attention per device over the batch shards."""
    params, latents, timestep, text, ((_, want), _) = problem
    mesh = mesh_lib.make_mesh(("data", "fsdp"), (2, 2), devices=jax.devices()[:4])
    seq = SequenceParallel(mesh)
    assert (seq.axis, seq.size, seq.spec("batch", "tokens", None)) == (None, 1, P(("data", "fsdp"), None, None))
    assert SequenceParallel(mesh, rules=activation_rules(("data",))).spec("batch", "tokens") == P("data", None)
    out = jax.jit(lambda *a: wan.WanTransformer(TINY, sequence=seq).apply({"params": a[0]}, *a[1:]))(
        params, latents, timestep, text)
    np.testing.assert_allclose(out, want, atol=TOL)


def test_unknown_method_is_named():
    with pytest.raises(ConfigError, match="'splash'"):
        SequenceParallel(mesh_lib.make_mesh(AXES, (2, 1, 4)), "splash")


@pytest.mark.parametrize("context,method,outcome", [
    (4, "ulysses", "all_to_all"), (8, "ring", "collective_permute"), (8, "ulysses", "does not divide them"),
    (16, "ring", "does not divide the 32760 tokens")])
def test_wan21_video_tokens_shard_on_an_abstract_tpu_mesh(context, method, outcome):
    """Wan2.1-T2V-1.3B (12 heads) at 81x480x832: latents 21x60x104, 1x2x2 patches, 32,760 = 2^3 3^2 5 7 13 tokens.
    Traced and lowered for TPU on an AbstractMesh data 2 x context (nothing allocated or compiled)."""
    cfg = wan.WanConfig(**wan.WAN21_T2V_1_3B, remat="block")
    mesh = mesh_lib.make_mesh(AXES, (2, 1, context), devices=2 * context)
    net = wan.WanTransformer(cfg, sequence=SequenceParallel(mesh, method))
    args = (wan.abstract_params(cfg), jax.ShapeDtypeStruct((2, 21, 60, 104, 16), jnp.float32),
            jax.ShapeDtypeStruct((2,), jnp.float32), jax.ShapeDtypeStruct((2, 512, 4096), jnp.float32))
    fn = jax.jit(lambda p, x, t, c: net.apply({"params": p}, x, t, c))
    if outcome.startswith("does not divide"):
        with pytest.raises(ConfigError, match=outcome):
            fn.trace(*args)
        return
    assert jax.eval_shape(fn, *args).shape == (2, 21, 60, 104, 16)
    assert outcome in fn.trace(*args).lower(lowering_platforms=("tpu",)).as_text()
