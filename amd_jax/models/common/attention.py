"""The attention core softmax(q k^T / sqrt(d)) v of the owned networks, by one of two kernels:

- 'xla': two einsums, the scores and the softmax in float32 (any backend);
- 'flash': the Pallas TPU flash-attention kernel (jax.experimental.pallas.ops.tpu.flash_attention; forward and
  backward kernels, never materialises the [q, k] scores in HBM). It runs per device under `shard_map` over the
  mesh's batch axes (XLA cannot partition a Pallas call). TPU only: on a CPU it runs inside
  `pltpu.force_tpu_interpret_mode()` (the tests). Where the kernel's tiling does not apply (a sequence length that
  is not a multiple of 128, e.g. 77 text tokens, or a batch the mesh cannot split) the call falls back to 'xla'.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

KERNELS = ("xla", "flash")
FLASH_BLOCK = 128  # the kernel's default tile; both sequence lengths must be multiples of it


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
        shards = math.prod(self.mesh.shape[a] for a in self.batch_axes) if self.mesh is not None else 1
        return q_shape[1] % FLASH_BLOCK == 0 and k_shape[1] % FLASH_BLOCK == 0 and q_shape[0] % shards == 0


def xla_attention(q, k, v):
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def tpu_flash(q, k, v):
    """The Pallas TPU kernel itself, on [b, h, s, d] inputs."""
    from jax.experimental.pallas.ops.tpu import flash_attention as pallas_flash

    return pallas_flash.flash_attention(q, k, v, sm_scale=q.shape[-1] ** -0.5)


def flash_attention(q, k, v, mesh: Mesh | None = None, batch_axes: tuple[str, ...] = ()):
    """The Pallas TPU flash kernel on [b, s, h, d] inputs, per device over `batch_axes` of `mesh` when given."""

    def local(q, k, v):  # the kernel's layout is [b, h, s, d]
        q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
        return jnp.swapaxes(tpu_flash(q, k, v), 1, 2).astype(v.dtype)

    if mesh is None or not batch_axes:
        return local(q, k, v)
    spec = P(batch_axes)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)
