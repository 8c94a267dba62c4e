"""Shared test configs."""

import os

from amd_jax.config_base import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_toy2d_config(**overrides):
    return load(os.path.join(ROOT, "configs", "toy2d_tiny.py"), overrides)
