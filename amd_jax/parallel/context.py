"""Sequence (context) parallelism: a transformer's tokens split over a 'context' mesh axis, attention under shard_map.

A video's tokens outgrow one chip long before its weights do (Wan2.1 at 81x480x832: 32,760 tokens per sample, one
sample's [heads, tokens, tokens] float32 scores 51 GB), so the token axis is split over the mesh axis that
`ACTIVATION_RULES['tokens']` names (parallel/sharding.py; 'context' by default) while the batch stays split over
the batch axes. Everything token-wise (projections, norms, MLP, modulation) is then local; only self-attention
needs the other devices' tokens. Two ways, the knob `SequenceParallel.method`:

- 'ulysses' (DeepSpeed-Ulysses; the default): one all_to_all turns [b, N/cp, h, d] into [b, N, h/cp, d] (all tokens
  of h/cp heads), attention runs per device on whole sequences, and one all_to_all turns it back. Per layer each
  device sends ~4 x its q/k/v/out shard (volume O(N d / cp), falling as cp grows), the per-device kernel sees a
  whole sequence (the Pallas flash kernel at 128 tokens or more, padded to its block and masked; AttentionCore's choice), and nothing else changes.
  It needs cp | heads: Wan2.1-1.3B has 12 heads, so context 2, 3, 4, 6 or 12 (14B: 40 heads).
- 'ring' (ring attention): q stays put, the k/v shards travel round the ring (cp - 1 ppermutes) and an online
  softmax (float32 running max / sum) folds in one [N/cp, N/cp] block per step. No limit from the heads (context 8
  on 12 heads), but each device sends its whole k/v cp - 1 times (O(N d) per layer, not falling with cp) and the
  per-block math is XLA's einsums (the public Pallas kernel returns no log-sum-exp to merge the blocks with).

Ulysses is the default because its traffic shrinks with cp and the flash kernel applies unchanged; ring is there
for context sizes the heads do not divide. Cross-attention needs only the local queries: the text is replicated
over the context axis (split over the batch axes), so it runs per device with no communication.

Sizes are checked before anything is traced (`SequenceParallel.check`): the context size must divide the tokens
(and the heads, for 'ulysses'), and the batch shards must divide the batch, each refused in one ConfigError line.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from amd_jax.errors import ConfigError
from amd_jax.models.common.attention import AttentionCore
from amd_jax.parallel.sharding import ACTIVATION_RULES, activation_spec

METHODS = ("ulysses", "ring")


def divisors(n: int, up_to: int = 64) -> list[int]:
    return [d for d in range(1, min(n, up_to) + 1) if n % d == 0]


@dataclasses.dataclass(frozen=True)
class SequenceParallel:
    """Tokens split over the mesh axis that `rules` gives the logical 'tokens' dimension (parallel/sharding.py's
    ACTIVATION_RULES: batch over ('data', 'fsdp'), tokens over 'context'; axes the mesh lacks are dropped), with
    self-attention by `method` (METHODS). A config whose mesh.batch_axes differ passes
    rules=sharding.activation_rules(batch_axes). `mesh` may be an AbstractMesh (tracing and lowering only)."""

    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh
    method: str = "ulysses"
    rules: tuple = ACTIVATION_RULES

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"sequence parallel method {self.method!r}: use one of {METHODS}.")
        axes = activation_spec(("tokens",), self.mesh, self.rules)[0]
        if isinstance(axes, tuple):
            raise ConfigError(f"the activation rule for 'tokens' names several mesh axes {axes}: sequence "
                              "parallelism splits tokens over one axis (e.g. ('tokens', ('context',))).")

    def spec(self, *logical) -> P:
        """The PartitionSpec of an activation whose dimensions are named `logical` (the rules' names or None)."""
        return activation_spec(logical, self.mesh, self.rules)

    @property
    def axis(self) -> str | None:
        """The mesh axis the tokens are split over (None where the mesh has no such axis, or it has size 1)."""
        return self.spec("tokens")[0]

    @property
    def size(self) -> int:
        return self.mesh.shape[self.axis] if self.axis else 1

    def batch_shards(self) -> int:
        axes = self.spec("batch")[0]
        axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
        return math.prod(self.mesh.shape[a] for a in axes)

    def check(self, batch: int, tokens: int, heads: int) -> None:
        """One ConfigError line if the mesh cannot split this batch / token count / head count."""
        cp, name = self.size, self.axis
        if tokens % cp:
            raise ConfigError(f"the context axis {name!r} of size {cp} does not divide the {tokens} tokens: choose a "
                              f"context size among {divisors(tokens)} (or change frames / resolution).")
        if self.method == "ulysses" and heads % cp:
            raise ConfigError(f"sequence parallel 'ulysses' splits the {heads} heads over the context axis {name!r} "
                              f"of size {cp}, which does not divide them: use a context size among {divisors(heads)} "
                              "or method='ring'.")
        if batch % self.batch_shards():
            raise ConfigError(f"the batch of {batch} does not split over the batch axes {self.spec('batch')[0]} "
                              f"({self.batch_shards()} shards): make the batch a multiple of {self.batch_shards()}.")

    def constrain(self, x: jax.Array, *logical) -> jax.Array:
        """`x` with the sharding its logical dimensions get from the rules (a no-op constraint where replicated)."""
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, self.spec(*logical)))

    def self_attention(self, core: AttentionCore) -> "ContextAttention":
        return ContextAttention(self, core.kernel, cross=False)

    def cross_attention(self, core: AttentionCore) -> "ContextAttention":
        return ContextAttention(self, core.kernel, cross=True)


@dataclasses.dataclass(frozen=True)
class ContextAttention:
    """An attention core (q [b, s, h, d], k and v [b, t, h, d] -> [b, s, h, d]) over token-split queries: self-
    attention by `seq.method`, or cross-attention (`cross`: k/v split over the batch only) by local queries. The
    per-device attention is models/common/attention.py's AttentionCore(`kernel`) without a mesh: the Pallas flash
    kernel where the per-device lengths are 128 tokens or more (padded and masked), XLA otherwise."""

    seq: SequenceParallel
    kernel: str = "xla"
    cross: bool = False

    def __call__(self, q, k, v):
        local = AttentionCore(self.kernel)
        tokens, text = self.seq.spec("batch", "tokens", None, None), self.seq.spec("batch", None, None, None)
        axis = self.seq.axis
        if self.cross or axis is None:
            body, kv_spec = local, text if self.cross else tokens
        else:
            body, kv_spec = (_ulysses if self.seq.method == "ulysses" else _ring)(local, axis, self.seq.size), tokens
        return jax.shard_map(body, mesh=self.seq.mesh, in_specs=(tokens, kv_spec, kv_spec), out_specs=tokens,
                             check_vma=False)(q, k, v)


def _ulysses(local, axis: str, size: int):
    """Per device: [b, N/cp, h, d] -all_to_all-> [b, N, h/cp, d], attention, and back."""

    def body(q, k, v):
        gather = (jax.lax.all_to_all(a, axis, split_axis=2, concat_axis=1, tiled=True) for a in (q, k, v))
        out = local(*gather)
        return jax.lax.all_to_all(out, axis, split_axis=1, concat_axis=2, tiled=True)

    return body


def _ring(local, axis: str, size: int):
    """Per device: the local queries against each of the `size` k/v shards in turn (passed round the ring by
    ppermute), merged by an online softmax in float32: running max m, running sum l, unnormalised output acc."""
    del local  # the public Pallas kernel returns no log-sum-exp to merge with; the blocks are XLA einsums
    ring = [(i, (i + 1) % size) for i in range(size)]

    def block(q, k, v):
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
        return scores, jax.lax.stop_gradient(jnp.max(scores, axis=-1))  # the result does not depend on m

    def pv(p, v):
        return jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)

    def body(q, k, v):
        scores, m = block(q, k, v)
        p = jnp.exp(scores - m[..., None])
        l, acc = jnp.sum(p, axis=-1), pv(p, v)
        for _ in range(size - 1):
            k, v = jax.lax.ppermute(k, axis, ring), jax.lax.ppermute(v, axis, ring)
            scores, m_block = block(q, k, v)
            m_new = jnp.maximum(m, m_block)
            p, old = jnp.exp(scores - m_new[..., None]), jnp.exp(m - m_new)
            l = l * old + jnp.sum(p, axis=-1)
            acc = acc * jnp.swapaxes(old, 1, 2)[..., None] + pv(p, v)
            m = m_new
        return (acc / jnp.swapaxes(l, 1, 2)[..., None]).astype(v.dtype)

    return body
