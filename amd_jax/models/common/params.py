"""Parameter-tree helpers every model family uses."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def cast_params(params: Any, dtype) -> Any:
    """Cast every floating leaf (diffusers' to_bf16 is broken on this jax: it calls jax.tree_map)."""
    return jax.tree_util.tree_map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)
