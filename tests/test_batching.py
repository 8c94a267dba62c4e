"""amd_jax/batching.py: every call of `fn` gets exactly `batch_size` rows (one compilation), the padding is what the
replaced loops appended (zeros, "" for prompts, the last row for tokens), and the outputs are `fn` row by row."""

from __future__ import annotations

import numpy as np
import pytest

from amd_jax import batching


def _recording(fn):
    seen = []

    def wrapped(*batches):
        seen.append([b.copy() if isinstance(b, np.ndarray) else list(b) for b in batches])
        return fn(*batches)

    return wrapped, seen


@pytest.mark.parametrize("n,bs", [(1, 4), (8, 4), (10, 4), (3, 8)])
def test_rows_padding_and_outputs(n, bs):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3) + 1  # no zero rows: padding is recognisable
    fn, seen = _recording(lambda b: {"sum": b.sum(1), "double": (2 * b, b[:, :1])})
    out = batching.map_fixed_batches(fn, x, bs)
    assert len(seen) == -(-n // bs) and all(batch[0].shape == (bs, 3) for batch in seen)
    padded = np.concatenate([x, np.zeros((-n % bs, 3), np.float32)])
    np.testing.assert_array_equal(np.concatenate([batch[0] for batch in seen]), padded)
    np.testing.assert_array_equal(out["sum"], x.sum(1))
    np.testing.assert_array_equal(out["double"][0], 2 * x)
    np.testing.assert_array_equal(out["double"][1], x[:, :1])


def test_prompt_lists_and_edge_fill():
    prompts = ["a", "b", "c", "d", "e"]
    fn, seen = _recording(lambda p: np.array([len(s) for s in p]))
    out = batching.map_fixed_batches(fn, prompts, 2, fill="")
    assert [b[0] for b in seen] == [["a", "b"], ["c", "d"], ["e", ""]]
    np.testing.assert_array_equal(out, [1, 1, 1, 1, 1])
    images, tokens = np.ones((3, 2), np.float32), np.array([[5, 6], [7, 8], [9, 10]], np.int32)
    fn, seen = _recording(lambda xi, ti: xi.sum(1) + ti.sum(1))
    out = batching.map_fixed_batches(fn, (images, tokens), 2, fill=(0, batching.EDGE))
    np.testing.assert_array_equal(seen[1][0], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(seen[1][1], [[9, 10], [9, 10]])
    assert seen[1][1].dtype == np.int32
    np.testing.assert_array_equal(out, [13, 17, 21])


def test_no_rows_is_an_error():
    with pytest.raises(ValueError, match="no input rows"):
        batching.map_fixed_batches(lambda b: b, np.zeros((0, 2)), 4)
