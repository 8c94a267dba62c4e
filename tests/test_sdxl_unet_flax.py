"""Our Flax SDXL UNet (amd_jax.models.sdxl.unet_flax) against diffusers 0.39's FlaxUNet2DConditionModel and the
committed PyTorch reference (tests/fixtures/sdxl_tiny), and its scan / remat variants against the plain module.
"""

from __future__ import annotations

import functools
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from jax.sharding import Mesh, PartitionSpec as P

from amd_jax.models.sdxl import unet, unet_flax, weights
from amd_jax.parallel.sharding import fsdp_spec, tree_shardings
from amd_jax.tasks.sdxl import arch

FIX = pathlib.Path(__file__).parent / "fixtures" / "sdxl_tiny"
PT_TOL = 1e-4  # as tests/test_sdxl_models.py: float32 CPU vs float32 PyTorch
# Gradients with and without remat, relative to the largest gradient: XLA fuses the recomputed float32 forward
# differently (absolute differences up to 3e-5 on the largest gradients; measured 2e-7 relative), a fault by O(1).
REMAT_TOL = 1e-6
FLAX_TOL = 1e-5  # ours vs diffusers' Flax module: the same float32 function, different op order
# A tiny config with 2- and 3-layer transformer stacks (the fixture's stacks are 1 and 2 deep).
DEEP = dict(block_out_channels=(32, 64), layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            transformer_layers_per_block=(2, 3), cross_attention_dim=16, addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=16 + 6 * 8, sample_size=8)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "reference.npz"))


@pytest.fixture(scope="module")
def tiny():
    """(diffusers module, our module, params loaded from the fixture's PyTorch checkpoint)."""
    module, params = weights.load_unet(FIX)
    return module, unet_flax.from_config(weights.read_config(FIX, "unet")), params


def _cond(ref):
    return {k: jnp.asarray(ref[k]) for k in unet.COND_KEYS}


def _shapes(tree):
    return {"/".join(k): tuple(v.shape) for k, v in flatten_dict(dict(tree)).items()}


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


def _max_abs(tree) -> float:
    return max(float(np.max(np.abs(x))) for x in jax.tree_util.tree_leaves(tree))


def _close(name, got, want, tol, relative=False):
    """Trees `got` and `want` have the same structure and shapes, and differ by at most `tol` anywhere
    (relative: as a fraction of the largest |want| in the tree)."""
    shapes = [jax.tree_util.tree_map(np.shape, tree) for tree in (got, want)]
    assert shapes[0] == shapes[1], (name, shapes)
    diff = _max_diff(got, want) / (_max_abs(want) if relative else 1.0)
    print(f"{name}: max {'relative' if relative else 'abs'} diff {diff:.2e}")
    assert diff <= tol, f"{name}: max {'relative' if relative else 'abs'} diff {diff} > {tol}"


# ------------------------------------------------------------------------------------ diffusers parity
def test_parameter_tree_equals_diffusers(tiny):
    theirs, ours, params = tiny
    assert _shapes(weights.abstract_params(ours)) == _shapes(weights.abstract_params(theirs)) == _shapes(params)


def test_outputs_and_features_match_diffusers_and_pytorch(ref, tiny):
    theirs, ours, params = tiny
    x, t, cond = ref["x"], ref["t"], _cond(ref)

    @jax.jit
    def outputs(p):
        both = [unet.unet_apply(m, p, x, t, cond, features=True) for m in (theirs, ours)]
        approx = [unet.unet_apply(m, p, x, t, cond, exact_gelu=False) for m in
                  (theirs, ours.clone(exact_gelu=False))]
        return both, approx

    ((out_d, mid_d), (out_o, mid_o)), (approx_d, approx_o) = outputs(params)
    assert out_o.dtype == mid_o.dtype == jnp.float32
    _close("unet vs diffusers Flax", out_o, out_d, FLAX_TOL)
    _close("mid-block features vs diffusers Flax", mid_o, mid_d, FLAX_TOL)
    _close("unet vs PyTorch", out_o, ref["unet_out"], PT_TOL)
    _close("mid-block features vs PyTorch", mid_o, ref["unet_mid"].transpose(0, 2, 3, 1), PT_TOL)
    _close("tanh-GELU unet vs diffusers' own GEGLU", approx_o, approx_d, FLAX_TOL)
    assert _max_diff(approx_o, out_o) > 10 * FLAX_TOL  # the GELU form is visible at this tolerance


def test_bf16_compute_stays_near_float32(ref, tiny):
    """dtype=bfloat16 computes in bf16 (norms/softmax in float32); unet_apply still returns float32."""
    _, ours, params = tiny
    x, t, cond = ref["x"], ref["t"], _cond(ref)
    out = jax.jit(lambda p: unet.unet_apply(ours.clone(dtype=jnp.bfloat16), p, x, t, cond))(params)
    assert out.dtype == jnp.float32
    diff = _max_diff(out, ref["unet_out"])
    print(f"bf16 compute vs PyTorch float32: max abs diff {diff:.2e} (max |ref| {np.abs(ref['unet_out']).max():.2f})")
    assert 1e-4 < diff < 0.1


def test_full_sdxl_base_parameter_tree_equals_diffusers():
    """Shapes only: the full SDXL base config gives diffusers' tree (2,567,463,684 params), also when scanned."""
    ours = unet_flax.from_config(arch.SDXL_BASE_UNET)
    tree = _shapes(jax.eval_shape(ours.init_weights, jax.random.PRNGKey(0)))
    assert tree == _shapes(weights.abstract_params(weights.unet_from_config(arch.SDXL_BASE_UNET)))
    scanned = jax.eval_shape(ours.clone(scan_layers=True).init_weights, jax.random.PRNGKey(0))
    counts = [sum(int(np.prod(s)) for s in t.values()) for t in (tree, _shapes(scanned))]
    assert counts == [2_567_463_684] * 2
    assert _shapes(scanned)["mid_block/attentions_0/transformer_blocks/attn1/to_q/kernel"] == (10, 1280, 1280)


def test_exporter_takes_our_config_and_scanned_params(tmp_path, tiny):
    """`SDXLUNet.config` is a diffusers UNet config, and scanned params export as the unscanned ones: exporting
    both and reloading gives the same network and the fixture's weights."""
    theirs, ours, params = tiny
    weights.save_unet_pytorch(tmp_path, unet_flax.stack_layers(params), ours.clone(scan_layers=True))
    module, back = weights.load_unet(tmp_path)
    assert module == theirs
    assert _shapes(back) == _shapes(params) and _max_diff(back, params) == 0.0


# --------------------------------------------------------------------------------------------- scan
def _deep_inputs():
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    added = {"text_embeds": jax.random.normal(k[0], (2, 16)), "time_ids": jnp.array([[64., 64, 0, 0, 64, 64]] * 2)}
    return jax.random.normal(k[1], (2, 4, 8, 8)), jnp.array([3, 700]), jax.random.normal(k[2], (2, 5, 16)), added


def _loss(module, params, x, t, context, added):
    return jnp.sum(module.apply({"params": params}, x, t, context, added)[0] ** 2)


def test_scanned_layers_equal_looped_layers():
    plain = unet_flax.SDXLUNet(**DEEP)
    params = plain.init_weights(jax.random.PRNGKey(0))
    stacked = unet_flax.stack_layers(params)
    scanned = plain.clone(scan_layers=True)
    assert _shapes(stacked) == _shapes(jax.eval_shape(scanned.init_weights, jax.random.PRNGKey(0)))
    blocks = stacked["down_blocks_1"]["attentions_0"]
    assert "transformer_blocks_0" not in blocks
    assert blocks["transformer_blocks"]["attn1"]["to_q"]["kernel"].shape == (3, 64, 64)
    x, t, context, added = _deep_inputs()
    f = jax.jit(lambda m, p: m.apply({"params": p}, x, t, context, added)[0], static_argnums=0)
    _close("scanned vs looped transformer layers", f(scanned, stacked), f(plain, params), 1e-6)
    back = unet_flax.unstack_layers(stacked)
    assert _shapes(back) == _shapes(params)
    assert _max_diff(back, params) == 0.0


def test_scanned_remat_module_through_unet_apply(ref, tiny):
    """unet_apply (features=True captures `mid_block`) works unchanged on the scanned, remat'd module."""
    _, ours, params = tiny
    x, t, cond = ref["x"], ref["t"], _cond(ref)
    fast = ours.clone(scan_layers=True, remat="block")
    f = jax.jit(lambda m, p: unet.unet_apply(m, p, x, t, cond, features=True), static_argnums=0)
    _close("scanned+remat vs plain (output, mid-block)", f(fast, unet_flax.stack_layers(params)), f(ours, params), 1e-6)


def test_stack_layers_rejects_gaps():
    layer = {"w": np.zeros(2)}
    with pytest.raises(ValueError, match="not numbered 0..n-1"):
        unet_flax.stack_layers({"transformer_blocks_0": layer, "transformer_blocks_2": layer})


def _specs(tree, n_devices: int, rules=()) -> dict:
    """path -> PartitionSpec padded to the leaf's rank, on a 1-D fsdp mesh of n_devices (every leaf considered)."""
    mesh = Mesh(np.array(jax.devices()[:n_devices]), ("fsdp",))
    shardings = flatten_dict(tree_shardings(tree, mesh, rules, min_size=1))
    shapes = flatten_dict(tree)
    return {"/".join(k): tuple(s.spec) + (None,) * (len(shapes[k].shape) - len(s.spec)) for k, s in shardings.items()}


@pytest.mark.parametrize("n,rules", [(2, ()), (3, ()), (2, ((r"to_q/kernel$", ("fsdp", None)),))],
                         ids=["fsdp2", "fsdp3", "explicit-rule"])
def test_sharding_keeps_the_layer_axis_whole(n, rules):
    """A stacked leaf is sharded as its unscanned layer, with the layer axis unsharded. At fsdp=3 no weight dim of
    DEEP divides by 3, so the plain largest-divisible-dim rule would shard the 3-layer axis."""
    plain = unet_flax.SDXLUNet(**DEEP)
    tree = jax.eval_shape(plain.init_weights, jax.random.PRNGKey(0))
    stacked = jax.eval_shape(plain.clone(scan_layers=True).init_weights, jax.random.PRNGKey(0))
    want, got = _specs(tree, n, rules), _specs(stacked, n, rules)
    layer_leaves = [k for k in got if "/transformer_blocks/" in k]
    assert layer_leaves
    for k in layer_leaves:
        assert got[k] == (None,) + want[k.replace("/transformer_blocks/", "/transformer_blocks_0/")], k
    if n == 2:  # the check is not vacuous: layer weights are sharded (over a weight dim)
        assert any("fsdp" in got[k] for k in layer_leaves)
    if n == 3:
        mesh = Mesh(np.array(jax.devices()[:3]), ("fsdp",))
        kernel = "down_blocks_1/attentions_0/transformer_blocks/ff/net_0/proj/kernel"
        shape = flatten_dict(stacked)[tuple(kernel.split("/"))].shape
        assert fsdp_spec(shape, mesh, min_size=1) == P("fsdp", None, None)  # what the layer axis would have got


# -------------------------------------------------------------------------------------------- remat
def _remat_prims(jaxpr) -> set[str]:
    """The rematerialisation primitives (jax.checkpoint: 'checkpoint' / 'remat*') in a printed jaxpr."""
    return set(re.findall(r"\b(remat\w*|checkpoint)\[", str(jaxpr)))


@pytest.mark.parametrize("scan", [False, True], ids=["looped", "scanned"])
def test_remat_keeps_outputs_and_gradients(scan):
    base = unet_flax.SDXLUNet(**DEEP, scan_layers=scan)
    params = base.init_weights(jax.random.PRNGKey(0))
    x, t, context, added = _deep_inputs()
    value_and_grad = jax.value_and_grad(lambda m, p, x: _loss(m, p, x, t, context, added), argnums=(1, 2))
    run = jax.jit(value_and_grad, static_argnums=0)
    want = run(base, params, x)
    assert not _remat_prims(jax.make_jaxpr(value_and_grad, static_argnums=0)(base, params, x))
    for policy in ("block", "dots"):
        module = base.clone(remat=policy)
        got = run(module, params, x)
        _close(f"remat={policy} scan={scan}: loss", got[0], want[0], 1e-6, relative=True)
        _close(f"remat={policy} scan={scan}: grads (params, input)", got[1], want[1], REMAT_TOL, relative=True)
        assert _remat_prims(jax.make_jaxpr(value_and_grad, static_argnums=0)(module, params, x))


def test_bad_options_are_named():
    x, t, context, added = _deep_inputs()
    params = unet_flax.SDXLUNet(**DEEP).init_weights(jax.random.PRNGKey(0))
    apply = functools.partial(_loss, params=params, x=x, t=t, context=context, added=added)
    with pytest.raises(ValueError, match="remat='full'"):
        apply(unet_flax.SDXLUNet(**DEEP, remat="full"))
    with pytest.raises(NotImplementedError, match="dropout"):
        unet_flax.SDXLUNet(**DEEP, dropout=0.1).apply({"params": params}, x, t, context, added, train=True)
    with pytest.raises(ValueError, match="needs added_cond_kwargs"):
        unet_flax.SDXLUNet(**DEEP).apply({"params": params}, x, t, context, {"text_embeds": added["text_embeds"]})


# ------------------------------------------------------------------------------------ task wiring
def _tiny_config(**overrides):
    from amd_jax.config import load

    root = pathlib.Path(__file__).parent.parent
    return load(str(root / "configs" / "sdxl_tiny.py"), overrides)


def test_task_default_is_diffusers_and_owned_scan_remat_is_the_same_denoiser(ref):
    """model.unet_impl='diffusers' (default) builds diffusers' module as before; 'owned' with scan and remat
    builds ours, its teacher params are stacked after loading, and its denoiser equals the default's."""
    from diffusers import FlaxUNet2DConditionModel

    from amd_jax import tasks

    default = tasks.build(_tiny_config())
    assert isinstance(default.models.student.apply_fn.args[0], FlaxUNet2DConditionModel)
    owned = tasks.build(_tiny_config(**{"model.unet_impl": "owned", "model.unet_scan": True,
                                        "model.unet_remat": "block"}))
    module = owned.models.student.apply_fn.args[0]
    assert isinstance(module, unet_flax.SDXLUNet) and module.scan_layers and module.remat == "block"
    teacher, stacked = default.teacher(), owned.teacher()
    assert _shapes(stacked) == _shapes(jax.eval_shape(owned.models.init_denoiser, jax.random.PRNGKey(0)))
    assert _max_diff(unet_flax.unstack_layers(stacked), teacher) == 0.0
    x, t, cond = ref["x"], ref["t"], _cond(ref)
    f = jax.jit(lambda den, p: den.apply_fn(p, x, t, cond), static_argnums=0)  # eps (x0 divides by alpha_t)
    _close("owned scanned+remat vs diffusers denoiser (eps, bf16 teacher)", f(owned.models.student, stacked),
           f(default.models.student, teacher), FLAX_TOL)


@pytest.mark.parametrize("overrides,match", [
    ({"model.unet_impl": "flax"}, "model.unet_impl='flax'"),
    ({"model.unet_scan": True}, "need model.unet_impl='owned'"),
    ({"model.unet_impl": "owned", "model.unet_remat": "full"}, "model.unet_remat='full'"),
    ({"model.unet_impl": "owned", "model.unet_attention": "splash"}, "model.unet_attention='splash'"),
    ({"model.unet_attention": "flash"}, "need model.unet_impl='owned'"),
    ({"model.unet_impl": "owned", "model.unet_attention": "flash"}, "use --config.model.unet_attention=xla here"),
], ids=["impl", "scan-on-diffusers", "remat", "attention", "flash-on-diffusers", "flash-on-cpu"])
def test_unet_knob_errors_name_the_fix(overrides, match):
    from amd_jax import tasks
    from amd_jax.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(match)):
        tasks.check(_tiny_config(**overrides))
