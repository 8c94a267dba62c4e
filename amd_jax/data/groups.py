"""Per-condition groups in a global batch: K = `amd.group_size` consecutive rows share one condition.

AMD's group advantage (amd_jax/method/amd.py `group_advantage`) normalises a reward over K consecutive rows of the
global batch, under jit, so a group may span devices and processes. Each data pipeline (toy2d, digits / MNIST,
SDXL prompts) therefore draws B / K conditions per global batch and puts each on K consecutive rows; the rows'
noise, drawn per row by the training step, differs. K = 0 or 1 means no groups: the pipelines' batches are then
those of before groups existed, bit for bit.
"""

from __future__ import annotations


def size(group_size: int, batch_size: int) -> int:
    """K of a batch of `batch_size` rows (0 means 1); ValueError when K does not divide the batch."""
    k = max(int(group_size), 1)
    if batch_size % k:
        raise ValueError(f"a batch of {batch_size} rows cannot hold groups of {k} rows: use a batch that {k} divides.")
    return k
