"""Loading a config file: configs/NAME.py's get_config(), as --config does, with dotted overrides."""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from amd_jax.errors import ConfigError


def load(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Load configs/NAME.py's get_config() from a file path (as --config does) and apply dotted overrides."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist: give --config=configs/NAME.py (one of "
                          "configs/*.py, or a file of your own with a get_config()).")
    spec = importlib.util.spec_from_file_location("amd_jax_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"Unknown config key {key!r}.")
        node[leaf] = value
    return config
