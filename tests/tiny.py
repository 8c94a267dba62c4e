"""Shared test configs."""

import os

from amd_jax.config_base import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_toy2d_config(**overrides):
    return load(os.path.join(ROOT, "configs", "toy2d_tiny.py"), overrides)


def toy_steps(config):
    """(steps, frozen, fresh state, data) of a toy2d config with a randomly initialised teacher, plain jit on one
    device: the step functions alone, without a session."""
    import jax

    from amd_jax import tasks
    from amd_jax.steps import Steps

    task = tasks.build(config)
    steps = Steps(config, task.models)
    teacher = task.models.init_denoiser(jax.random.PRNGKey(1))
    state = jax.jit(steps.init)(teacher, jax.random.PRNGKey(0))
    return steps, {"teacher": teacher, "reward": None}, state, task.data
