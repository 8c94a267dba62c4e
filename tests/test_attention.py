"""The attention cores (amd_jax.models.common.attention): the Pallas TPU flash kernel, run on the CPU in Pallas' TPU
interpret mode, against a plain NumPy softmax attention, at lengths that tile by its 128-token block and at lengths
that do not (padded, the padded keys masked by segment ids); per device under shard_map over the mesh's batch axes;
the fall-back to XLA where the kernel does not apply; the kernel at Wan2.1's 32,760 tokens lowered for TPU (not
compiled) under Ulysses sequence parallelism; and the owned SDXL UNet with either kernel."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from amd_jax.models.common import attention
from amd_jax.models.common.attention import AttentionCore, xla_attention
from amd_jax.models.sdxl import unet_flax
from amd_jax.parallel import mesh as mesh_lib
from amd_jax.parallel.context import SequenceParallel

TOL = 2e-5  # float32: the kernel's online softmax vs a float64 reference (measured ~4e-7 on the outputs)


def _qkv(b=2, s=256, t=256, h=2, d=64, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (jax.random.normal(k1, (b, s, h, d)), jax.random.normal(k2, (b, t, h, d)),
            jax.random.normal(k3, (b, t, h, d)))


def numpy_attention(q, k, v):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def _pallas_calls(fn, *args) -> int:
    return len(re.findall(r"\bpallas_call\[", str(jax.make_jaxpr(fn)(*args))))


@pytest.mark.parametrize("s,t", [(256, 256), (130, 130), (200, 128), (256, 200)],
                         ids=["self", "self-130-padded", "queries-200-padded", "keys-200-padded"])
def test_flash_equals_numpy_attention_and_xla_gradients(s, t):
    """Lengths that tile run the kernel as they are; others are padded to whole blocks (130 -> 256, 200 -> 256),
    the padded keys masked, the padded query rows sliced off: the same attention and gradients either way.
    (Each case runs in Pallas' slow interpret mode, so one per kind: 256 x 128 unpadded cross-attention adds nothing
    to 'self' (unpadded, two key blocks) and 'queries-200-padded' (fewer keys than queries, one key block).)"""
    q, k, v = _qkv(s=s, t=t)
    flash = AttentionCore("flash")
    assert _pallas_calls(flash, q, k, v) == 1
    with pltpu.force_tpu_interpret_mode():
        out = jax.jit(flash)(q, k, v)
        grads = jax.jit(jax.grad(lambda *a: jnp.sum(flash(*a) ** 2), argnums=(0, 1, 2)))(q, k, v)
    np.testing.assert_allclose(out, numpy_attention(q, k, v), atol=TOL)
    want = jax.grad(lambda *a: jnp.sum(xla_attention(*a) ** 2), argnums=(0, 1, 2))(q, k, v)
    for name, g, w in zip("qkv", grads, want):
        np.testing.assert_allclose(g, w, atol=TOL * float(np.abs(w).max()), err_msg=f"d{name}")


@pytest.mark.parametrize("s,t", [(130, 130), (256, 200)], ids=["self-130", "keys-200"])
def test_padded_keys_need_the_segment_mask(monkeypatch, s, t):
    """The mutation: without the segment ids the zero-padded keys take softmax weight (scores 0) and the output is
    off by ~0.1-0.3 (measured 0.28 at 130 tokens, 0.09 at 200 keys), against ~5e-7 with them."""
    q, k, v = _qkv(s=s, t=t)
    monkeypatch.setattr(attention, "key_segment_ids", lambda *args: None)
    with pltpu.force_tpu_interpret_mode():
        out = jax.jit(AttentionCore("flash"))(q, k, v)
    assert np.abs(np.asarray(out) - numpy_attention(q, k, v)).max() > 1000 * TOL


def masked_reference_kernel(q, k, v, segment_ids=None):
    """The kernel's contract in plain XLA: [b, h, s, d] inputs, attention only between equal segment ids."""
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * q.shape[-1] ** -0.5
    if segment_ids is not None:
        same = segment_ids.q[:, None, :, None] == segment_ids.kv[:, None, None, :]
        scores = jnp.where(same, scores, -jnp.inf)
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)


def test_flash_runs_per_device_over_the_batch_axes(monkeypatch):
    """The shard_map wiring on 8 devices at 200 tokens: each device's kernel call sees its own 1/8 of the batch,
    padded to 256 tokens with the padded keys masked, and the result is the whole batch's attention. The kernel is
    replaced by masked plain attention in its [b, h, s, d] layout here (Pallas' TPU interpret mode hangs under
    shard_map over 8 CPU devices); the kernel itself is checked above."""
    mesh = mesh_lib.make_mesh(("data", "fsdp"), (2, 4))
    q, k, v = _qkv(b=8, s=200, t=200)
    seen = []

    def kernel(q, k, v, segment_ids=None):
        seen.append((q.shape, segment_ids.kv.shape))
        return masked_reference_kernel(q, k, v, segment_ids)

    monkeypatch.setattr(attention, "tpu_flash", kernel)
    core = AttentionCore("flash", mesh, mesh_lib.batch_axes(mesh, ("data", "fsdp")))
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    q, k, v = (jax.device_put(a, shard) for a in (q, k, v))
    out = jax.jit(core)(q, k, v)
    assert seen == [((1, 2, 256, 64), (1, 256))]  # [b / 8, h, s padded, d], [b / 8, s padded]
    assert out.sharding.spec == shard.spec
    np.testing.assert_allclose(out, numpy_attention(q, k, v), atol=TOL)


@pytest.mark.parametrize("shape,mesh_shape", [((2, 256, 77), None), ((2, 100, 100), None), ((6, 256, 256), (2, 4))],
                         ids=["77-text-tokens", "shorter-than-a-block", "batch-not-split"])
def test_flash_falls_back_to_xla_where_the_kernel_does_not_tile(shape, mesh_shape):
    b, s, t = shape
    q, k, v = _qkv(b=b, s=s, t=t)
    mesh = mesh_lib.make_mesh(("data", "fsdp"), mesh_shape) if mesh_shape else None
    core = AttentionCore("flash", mesh, mesh_lib.batch_axes(mesh, ("data", "fsdp")) if mesh else ())
    assert _pallas_calls(core, q, k, v) == 0
    np.testing.assert_allclose(core(q, k, v), numpy_attention(q, k, v), atol=TOL)


def _tpu_kernel_operands(lowered_text: str) -> list[str]:
    """The operand types of each Pallas TPU kernel call in a module lowered for TPU."""
    return [re.findall(r": \(([^()]*)\) -> ", line)[-1] for line in lowered_text.splitlines()
            if "@tpu_custom_call" in line]


@pytest.mark.parametrize("kernel", ["flash", "xla"])
def test_wan_video_tokens_lower_to_the_kernel_without_scores(kernel):
    """Wan2.1 at 81x480x832: 32,760 tokens (8 x 4095), 12 heads of 128, bfloat16, Ulysses over an abstract
    data 2 x context 4 mesh; the gradient lowered for TPU (no TPU, no compile). 'flash': the forward and both
    backward kernels run per device on [1, 3, 32768, 128] (padded) with the segment ids, and no [N, N] tensor
    appears; 'xla' (the check's other side) materialises the [b, 3, 32760, 32760] scores."""
    mesh = mesh_lib.make_mesh(("data", "context"), (2, 4), devices=8)
    attend = SequenceParallel(mesh).self_attention(AttentionCore(kernel))
    x = jax.ShapeDtypeStruct((2, 32760, 12, 128), jnp.bfloat16)

    def loss(q, k, v):
        return jnp.sum(attend(q, k, v).astype(jnp.float32) ** 2)

    with jax.sharding.use_abstract_mesh(mesh):
        text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(x, x, x).lower(lowering_platforms=("tpu",)).as_text()
    scores = re.findall(r"tensor<[0-9x]*3276[08]x3276[08]x\w+>", text)
    operands = _tpu_kernel_operands(text)
    if kernel == "xla":
        assert scores and not operands
        return
    assert not scores
    assert len(operands) == 3  # forward (with residuals), backward dk/dv, backward dq
    for types in operands:
        assert types.startswith("tensor<1x3x32768x128xbf16>, " * 3 + "tensor<1x32768x128xi32>, tensor<1x8x32768xi32>")


def test_unknown_kernel_is_named():
    with pytest.raises(ValueError, match="'splash'"):
        AttentionCore("splash")


def test_owned_unet_with_flash_equals_xla():
    """A tiny SDXL UNet on 32 x 32 latents: its 16 x 16 level self-attends over 256 tokens (the kernel), its
    cross-attention over 7 text tokens (shorter than a block) falls back; outputs and input gradients equal the XLA
    kernel's. Without remat: the interpret mode's callbacks cannot be rematerialised (the TPU plan compiles flash with remat).
    One transformer layer per block and 2 heads: every kernel call costs seconds in interpret mode, and deeper stacks
    or more heads wire nothing new (the kernel's heads and batch rows are checked above)."""
    cfg = dict(block_out_channels=(32, 64), layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
               up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 2),
               transformer_layers_per_block=(1, 1), cross_attention_dim=16, addition_time_embed_dim=8,
               projection_class_embeddings_input_dim=16 + 6 * 8, sample_size=32)
    xla_unet = unet_flax.SDXLUNet(**cfg, scan_layers=True)
    flash_unet = xla_unet.clone(attention_core=AttentionCore("flash"))
    params = xla_unet.init_weights(jax.random.PRNGKey(0))
    r = np.random.default_rng(0)
    x = jnp.asarray(r.standard_normal((2, 4, 32, 32)), jnp.float32)
    context = jnp.asarray(r.standard_normal((2, 7, 16)), jnp.float32)
    added = {"text_embeds": jnp.asarray(r.standard_normal((2, 16)), jnp.float32),
             "time_ids": jnp.asarray(r.uniform(0, 1024, (2, 6)), jnp.float32)}
    t = jnp.asarray([10, 700])

    def loss(module, x):
        return jnp.mean(module.apply({"params": params}, x, t, context, added)[0] ** 2)

    assert _pallas_calls(lambda x: loss(flash_unet, x), x) >= 1
    with pltpu.force_tpu_interpret_mode():
        got = jax.jit(jax.value_and_grad(lambda x: loss(flash_unet, x)))(x)
    want = jax.jit(jax.value_and_grad(lambda x: loss(xla_unet, x)))(x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5 * float(np.abs(want[1]).max()))
