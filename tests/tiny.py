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


def step_metrics(workdir, step):
    """The metrics the loop logged for step N (its metrics.jsonl row), without their train/ and perf/ prefixes."""
    from amd_jax.writers import read_jsonl

    for row in read_jsonl(os.path.join(workdir, "metrics.jsonl")):
        if row["step"] == step:
            return {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith(("train/", "perf/"))}
    raise AssertionError(f"no metrics.jsonl row for step {step}")


def close_to_reference(name, got, want, tol) -> float:
    """Assert max |got - want| < tol (same shapes) for a parity test against a committed reference output; print the
    figure (pytest -s shows it) and return it."""
    import numpy as np

    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    diff = float(np.max(np.abs(got - want)))
    print(f"{name}: max abs diff {diff:.2e} (max |ref| {np.max(np.abs(want)):.2f}, tol {tol})")
    assert diff < tol, f"{name}: max abs diff {diff} >= {tol}"
    return diff
