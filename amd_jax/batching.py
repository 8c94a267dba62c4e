"""Mapping a function over the rows of a batch in pieces: on the host in batches of one fixed size, so it compiles
once (`map_fixed_batches`), and inside a jitted step in sequential pieces, to lower peak memory
(`sequential_chunks` for row-wise functions, `mean_over_pieces` for means such as a loss and its gradient).

map_fixed_batches pads the last batch to `batch_size` (zeros, "" for prompt lists, or copies of the last row) and
drops the padding rows from the outputs; every output row depends only on its own input row, so padding changes
nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

EDGE = "edge"  # a `fill` that repeats the last real row (e.g. token ids, where zeros are not a valid input)


def map_fixed_batches(fn: Callable, inputs, batch_size: int, fill: Any = 0) -> Any:
    """`fn(*batches)` over the rows of `inputs`, `batch_size` rows at a time; the outputs' rows concatenated.

    `inputs`: one array or list (e.g. of prompts), or a tuple of them with the same length; `fill`: the padding of
    the last batch (one value for all inputs, or a tuple with one per input): a value (0, "") or EDGE. `fn` returns
    an array or a pytree of arrays (dict, tuple) with the batch as leading axis; the result is the same pytree of
    numpy arrays with one row per input row.
    """
    many = isinstance(inputs, tuple)
    inputs = inputs if many else (inputs,)
    fills = fill if isinstance(fill, tuple) else (fill,) * len(inputs)
    n = len(inputs[0])
    if n == 0:
        raise ValueError("map_fixed_batches: no input rows")
    outs = []
    for i in range(0, n, batch_size):
        rows = min(batch_size, n - i)
        batches = [_padded(x[i:i + batch_size], batch_size - rows, f) for x, f in zip(inputs, fills)]
        outs.append(jax.tree.map(lambda o, rows=rows: np.asarray(o)[:rows], fn(*batches)))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outs)


def _padded(part: np.ndarray | Sequence, pad: int, fill):
    """`part` with `pad` rows of `fill` (or of its last row, for EDGE) appended; a list stays a list."""
    if isinstance(part, list):
        return part + ([part[-1]] if fill == EDGE else [fill]) * pad
    if not pad:
        return part
    rows = np.repeat(part[-1:], pad, 0) if fill == EDGE else np.full((pad, *part.shape[1:]), fill, part.dtype)
    return np.concatenate([part, rows])


def sequential_chunks(fn: Callable, chunks: int, *args):
    """`fn(*args)` computed in `chunks` sequential pieces of the leading (batch) axis with `lax.map` (pieces as
    `split_pieces`: no row moves between devices). Peak activation memory falls about `chunks` times for the same
    FLOPs. Every output row must depend only on its own input row; `args` and the outputs are pytrees of arrays
    with the batch as leading axis."""
    if chunks == 1:
        return fn(*args)
    pieces = jax.lax.map(lambda xs: fn(*xs), split_pieces(args, chunks))
    return merge_pieces(pieces)


def mean_over_pieces(fn: Callable, pieces: int, const, rows, constrain: Callable | None = None):
    """The mean over `pieces` sequential pieces of the batch of `fn(const, piece)` (micro-batching): `rows` is a
    pytree of arrays with the batch as leading axis, split as `split_pieces`; fn's outputs (a pytree of float arrays,
    e.g. a loss, its metrics and a gradient) are summed in float32 in a `lax.scan` and divided by `pieces`. For a
    loss that is a mean over rows, with equal pieces, the mean of the pieces' losses and of their gradients is the
    whole batch's, computed with about 1/pieces of the activation memory. `constrain`: applied to the running sums
    (e.g. a with_sharding_constraint holding a gradient in its FSDP sharding, which XLA might otherwise replicate).

    `const` must hold every weight fn uses (not a closure): each piece passes it through an optimization barrier
    together with the piece's rows, so that XLA cannot hoist the FSDP all-gathers of the weights out of the loop
    (XLA's CPU compiler does hoist them without it, tests/test_microbatches.py; hoisted, the whole gathered weights
    would stay alive through every piece)."""
    parts = split_pieces(rows, pieces)
    out_abs = jax.eval_shape(fn, const, jax.tree_util.tree_map(lambda a: a[0], parts))
    constrain = constrain or (lambda t: t)

    def body(total, piece):
        weights, piece = jax.lax.optimization_barrier((const, piece))
        out = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), fn(weights, piece))
        return constrain(jax.tree_util.tree_map(jnp.add, total, out)), None

    zero = constrain(jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, jnp.float32), out_abs))
    total, _ = jax.lax.scan(body, zero, parts)
    return jax.tree_util.tree_map(lambda t, a: (t / pieces).astype(a.dtype), total, out_abs)


def split_pieces(tree, pieces: int):
    """Every leaf [B, ...] -> [pieces, B // pieces, ...], piece c taking rows c, pieces + c, 2 pieces + c, ...: a
    batch split over devices in contiguous blocks (the mesh's batch sharding) gives every device rows of its own in
    every piece and no row moves, when `pieces` divides the rows per device."""
    b = jax.tree_util.tree_leaves(tree)[0].shape[0]
    if b % pieces:
        raise ValueError(f"{pieces} pieces (chunks) do not divide the batch of {b} rows.")
    return jax.tree_util.tree_map(lambda a: jnp.swapaxes(a.reshape((b // pieces, pieces) + a.shape[1:]), 0, 1), tree)


def merge_pieces(tree):
    """The inverse of split_pieces: [pieces, B // pieces, ...] -> [B, ...] in the original row order."""
    return jax.tree_util.tree_map(lambda y: jnp.swapaxes(y, 0, 1).reshape((-1,) + y.shape[2:]), tree)
