"""The compute and parameter dtypes a config may name (model.compute_dtype, model.teacher_dtype, ...)."""

from __future__ import annotations

import jax.numpy as jnp

from amd_jax.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype(name: str, allowed=tuple(DTYPES)):
    """The jnp dtype of `name`, one of `allowed`; ConfigError naming the choices otherwise."""
    if name not in allowed:
        raise ConfigError(f"dtype {name!r}: use one of {sorted(allowed)}.")
    return DTYPES[name]
