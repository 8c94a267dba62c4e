"""The attention core softmax(q k^T / sqrt(d)) v of the owned networks, by one of two kernels:

- 'xla': two einsums, the scores and the softmax in float32 (any backend); it materialises the [q, k] scores.
- 'flash': the Pallas TPU flash-attention kernel (jax.experimental.pallas.ops.tpu.flash_attention; forward and
  backward kernels, never materialises the [q, k] scores in HBM). It runs per device under `shard_map` over the
  mesh's batch axes (XLA cannot partition a Pallas call). TPU only: on a CPU it runs inside
  `pltpu.force_tpu_interpret_mode()` (the tests).

The kernel tiles both sequences by FLASH_BLOCK = 128 tokens. Lengths that do not tile (Wan2.1's 81x480x832 video:
32,760 = 8 x 4095 tokens per sample) are padded with zeros to the next multiple of 128 and the padded keys masked
by the kernel's segment ids (real keys segment 0, padded keys segment 1, every query segment 0: a padded query row
attends the real keys, so no row is ever fully masked, and its output is sliced off). Without the mask the padded
keys would take softmax weight exp(0 - max) each; with it they take exp(-0.7 x float32 max) = 0. Where only the
queries are padded (cross-attention to 512 text tokens) no mask is needed: the query rows are independent.

`AttentionCore.flash_applies` makes the choice, automatically: flash where both lengths are at least one block
(shorter ones, e.g. 77 or 7 text tokens, have a small [q, k] score matrix for XLA and would be mostly padding) and
the mesh's batch shards divide the batch; 'xla' otherwise.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

KERNELS = ("xla", "flash")
FLASH_BLOCK = 128  # the kernel's default tile; both sequence lengths are padded to multiples of it


@dataclasses.dataclass(frozen=True)
class AttentionCore:
    """`kernel` from KERNELS; for 'flash', the `mesh` the step is sharded on and its `batch_axes`, over which the
    kernel runs per device (mesh None: called directly, as on one device)."""
    kernel: str = "xla"
    mesh: Mesh | None = None
    batch_axes: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(f"attention kernel {self.kernel!r}: use one of {KERNELS}.")

    def __call__(self, q, k, v):
        """q [b, s, h, d], k and v [b, t, h, d] -> [b, s, h, d] in v's dtype."""
        if self.kernel == "flash" and self.flash_applies(q.shape, k.shape):
            return flash_attention(q, k, v, self.mesh, self.batch_axes)
        return xla_attention(q, k, v)

    def flash_applies(self, q_shape, k_shape) -> bool:
        """Both lengths at least one kernel block (any length from there on is padded to tile) and the batch split
        evenly over the mesh's batch axes."""
        shards = math.prod(self.mesh.shape[a] for a in self.batch_axes) if self.mesh is not None else 1
        return min(q_shape[1], k_shape[1]) >= FLASH_BLOCK and q_shape[0] % shards == 0


def padded_length(n: int) -> int:
    """`n` rounded up to the next multiple of FLASH_BLOCK."""
    return -(-n // FLASH_BLOCK) * FLASH_BLOCK


def pad_tokens(x, length: int):
    """x [b, n, h, d] zero-padded along the tokens to `length`."""
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0)))


def key_segment_ids(batch: int, queries: int, keys: int, real_keys: int):
    """The kernel's SegmentIds masking keys `real_keys`.. (the padding): every query and the real keys segment 0,
    the padded keys segment 1."""
    from jax.experimental.pallas.ops.tpu.flash_attention import SegmentIds

    kv = (jnp.arange(keys) >= real_keys).astype(jnp.int32)
    return SegmentIds(q=jnp.zeros((batch, queries), jnp.int32), kv=jnp.broadcast_to(kv, (batch, keys)))


def xla_attention(q, k, v):
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def tpu_flash(q, k, v, segment_ids=None):
    """The Pallas TPU kernel itself, on [b, h, s, d] inputs whose lengths tile by FLASH_BLOCK."""
    from jax.experimental.pallas.ops.tpu import flash_attention as pallas_flash

    return pallas_flash.flash_attention(q, k, v, segment_ids=segment_ids, sm_scale=q.shape[-1] ** -0.5)


def padded_flash(q, k, v, kernel):
    """`kernel` on [b, s, h, d] inputs of any lengths: q, k, v padded to whole blocks, the padded keys masked by
    segment ids (only where the keys were padded), the padded query rows sliced off."""
    (b, s, _, _), t = q.shape, k.shape[1]
    s_pad, t_pad = padded_length(s), padded_length(t)
    segment_ids = key_segment_ids(b, s_pad, t_pad, t) if t_pad != t else None
    q, k, v = (jnp.swapaxes(a, 1, 2) for a in (pad_tokens(q, s_pad), pad_tokens(k, t_pad), pad_tokens(v, t_pad)))
    out = kernel(q, k, v, segment_ids)  # the kernel's layout is [b, h, s, d]
    return jnp.swapaxes(out, 1, 2)[:, :s].astype(v.dtype)


def flash_attention(q, k, v, mesh: Mesh | None = None, batch_axes: tuple[str, ...] = ()):
    """The Pallas TPU flash kernel on [b, s, h, d] inputs (any lengths, `padded_flash`), per device over
    `batch_axes` of `mesh` when given."""

    def local(q, k, v):
        return padded_flash(q, k, v, tpu_flash)

    if mesh is None or not batch_axes:
        return local(q, k, v)
    spec = P(batch_axes)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)
