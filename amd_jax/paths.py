"""Paths as a user types them: made absolute once, at the entry point.

Orbax and TensorStore refuse relative paths, and a run that changes directory would write elsewhere, so every
local path (the workdir, and the config's path-valued keys) is resolved to an absolute one before anything uses
it: `~` expanded, `./` and relative paths taken from the current directory. URLs (gs://, s3://, ...) and scheme
references such as `tfds:coco_captions` are kept as they are; '' stays '' (it means "not set" in the configs).
"""

from __future__ import annotations

import os
import re

from amd_jax.errors import ConfigError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # gs://bucket, s3://..., tfds:name (two letters or more)

# Config leaves holding a path: keys with these names, and every leaf below these blocks.
_PATH_KEYS = {"dir", "path", "cache_dir", "tfds_dir", "embeddings", "real", "prompts", "inception", "fid_ref"}
_PATH_BLOCKS = {"eval.scorers"}


def is_url(path: str) -> bool:
    return bool(_SCHEME.match(path))


def absolute(path: str) -> str:
    """`path` made absolute if it is local ('~', './', relative); URLs and '' unchanged."""
    path = str(path)
    if not path or is_url(path):
        return path
    return os.path.abspath(os.path.expanduser(path))


def is_path_key(dotted: str) -> bool:
    """True for a config leaf that holds a path: its name is a path key, or it lies in a path block."""
    block, _, name = dotted.rpartition(".")
    return name in _PATH_KEYS or block in _PATH_BLOCKS


def workdir(path: str | None, flag: str = "--workdir") -> str:
    """A workdir flag's value, absolute; an empty one is refused (it would write into the current directory)."""
    if path is None or not str(path).strip():
        raise ConfigError(f"{flag} is empty: give the directory the run writes into, e.g. {flag}=workdirs/NAME.")
    return absolute(str(path).strip())


def resolve_config_paths(config) -> list[str]:
    """Make every local path-valued leaf of `config` absolute, in place; returns the dotted keys it changed."""
    changed = []

    def visit(node, prefix):
        for key in list(node.keys()):
            value, dotted = node[key], f"{prefix}{key}"
            if hasattr(value, "keys"):
                visit(value, dotted + ".")
            elif isinstance(value, str) and is_path_key(dotted):
                new = absolute(value)
                if new != value:
                    node[key] = new
                    changed.append(dotted)

    with _unlocked(config):
        visit(config, "")
    return changed


def _unlocked(config):
    import contextlib

    return config.unlocked() if hasattr(config, "unlocked") else contextlib.nullcontext()
