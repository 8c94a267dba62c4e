"""Rematerialisation of a Flax layer class by a config knob, the same for every family (SDXL UNet, Wan, umT5)."""

from __future__ import annotations

import flax.linen as nn
import jax

POLICIES = ("none", "block", "dots")  # the `remat` knob's values


def remat(cls, policy: str, in_scan: bool = False):
    """`cls` rematerialised per `policy`: 'none' returns it unchanged, 'block' recomputes the whole layer in the
    backward pass, 'dots' keeps the matmul outputs without batch dimensions (jax's dots_with_no_batch_dims_saveable).
    Inside nn.scan the loop already keeps XLA from CSE-ing the recomputation away, so prevent_cse is off there
    (flax's advice)."""
    if policy not in POLICIES:
        raise ValueError(f"remat policy {policy!r}; expected one of {POLICIES}")
    if policy == "none":
        return cls
    saveable = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if policy == "dots" else None
    return nn.remat(cls, policy=saveable, prevent_cse=not in_scan)
