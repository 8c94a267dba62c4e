"""Shared test configs."""

import os

from amd_jax.config import load

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


def run_toy_steps(config, n_iters, after_generator=None):
    """n iterations of the DMD2/AMD loop (TTUR order) from toy_steps' state, plain jit on one device; returns the
    final state. `after_generator(state)` is called after each generator step."""
    import jax
    import jax.numpy as jnp

    steps, frozen, state, data = toy_steps(config)
    gen, samp, crit = (jax.jit(f) for f in (steps.generator_step, steps.sample_step, steps.critic_step))
    for i in range(n_iters):
        batch = jax.tree_util.tree_map(jnp.asarray, data.global_batch(i, config.global_batch))
        if i % config.dmd.ttur == 0:
            state, x, r, _ = gen(state, frozen, batch)
            if after_generator is not None:
                after_generator(state)
        else:
            x, r = samp(state, frozen, batch)
        state, _ = crit(state, frozen, batch, x, r)
    return state


def step_metrics(records, step):
    """The metrics of the loop's log line 'step N/M k=v ... |' for step N, from caplog records."""
    import re

    for r in records:
        m = re.match(rf"step {step}/\d+ (.*) \|", r.getMessage())
        if m:
            return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    raise AssertionError(f"no log line for step {step}")
