"""Mapping a function over the rows of a batch in pieces: on the host in batches of one fixed size, so it compiles
once (`map_fixed_batches`), and inside a jitted step in sequential pieces, to lower peak memory
(`sequential_chunks`).

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
    """`fn(*args)` computed in `chunks` sequential pieces of the leading (batch) axis with `lax.map`: piece c takes
    rows c, chunks + c, 2 chunks + c, ..., so that a batch split over devices in contiguous blocks (the mesh's batch
    sharding) gives every device rows of its own in every piece and no row moves, when `chunks` divides the rows per
    device. Peak activation memory falls about `chunks` times for the same FLOPs. Every output row must depend only
    on its own input row; `args` and the outputs are pytrees of arrays with the batch as leading axis."""
    if chunks == 1:
        return fn(*args)
    b = jax.tree_util.tree_leaves(args)[0].shape[0]
    if b % chunks:
        raise ValueError(f"sequential_chunks: {chunks} chunks do not divide the batch of {b} rows.")
    split = lambda a: jnp.swapaxes(a.reshape((b // chunks, chunks) + a.shape[1:]), 0, 1)
    pieces = jax.lax.map(lambda xs: fn(*xs), jax.tree_util.tree_map(split, args))
    return jax.tree_util.tree_map(lambda y: jnp.swapaxes(y, 0, 1).reshape((b,) + y.shape[2:]), pieces)
