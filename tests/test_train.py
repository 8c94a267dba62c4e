"""The training step and the session on a tiny toy2d config.

- AMD with s = 0 and lambda = 0 compiles DMD2's program and so reproduces it bit for bit (parameters after several
  iterations, GAN on); DMD2 without reward.monitor (another program) to float rounding.
- No gradient reaches the teacher or the reward model (and so not the alpha/beta coefficients either).
- 8 simulated devices (data=4, fsdp=2) give the 1-device parameters within float tolerance.
- A run stopped after a checkpoint and resumed ends with the parameters of an uninterrupted run.
- toy2d finishes and writes eval.json and the scatter plot.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax import tasks
from amd_jax.steps import Steps
from amd_jax.loop import train
from amd_jax.session import Session
from tiny import run_toy_steps, tiny_toy2d_config, toy_steps


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def _lowered_steps(config):
    """The StableHLO text of the generator and critic steps of a toy2d config (what jit compiles)."""
    steps, frozen, state, data = toy_steps(config)
    batch = jax.tree_util.tree_map(jnp.asarray, data.global_batch(0, config.global_batch))
    x, r = jax.jit(steps.sample_step)(state, frozen, batch)
    return (jax.jit(steps.generator_step).lower(state, frozen, batch).as_text(),
            jax.jit(steps.critic_step).lower(state, frozen, batch, x, r).as_text())


# Float tolerance between DIFFERENT programs after 5 toy iterations (as test_microbatches): XLA may fuse two
# programs differently, which moves a value by an ulp or so on some CPUs (tests/test_nonfinite.py measured one).
RTOL, ATOL = 1e-4, 1e-6


def _max_excess(a, b):
    """max over the float leaves of |a - b| / (ATOL + RTOL |b|): <= 1 within the tolerance, >> 1 for a real change."""
    return max(float(np.max(np.abs(x - y) / (ATOL + RTOL * np.abs(y)))) for x, y in zip(a, b))


def test_amd_with_zero_strength_is_dmd2_bit_for_bit():
    base = tiny_toy2d_config()
    base.gan.enabled = True
    dmd2 = base.copy_and_resolve_references()
    dmd2.method = "dmd2"  # reward.monitor on (the default): DMD2 computes and logs the rewards, as AMD does
    amd0 = base.copy_and_resolve_references()
    amd0.method = "amd"
    amd0.amd.s, amd0.amd.rls_lambda = 0.0, 0.0
    # s = 0 and lambda = 0 compile DMD2's very program (steps.py), so equal bits are a property of one program,
    # not of how this CPU happens to round two programs
    assert _lowered_steps(amd0) == _lowered_steps(dmd2)
    a, b = run_toy_steps(dmd2, 5), run_toy_steps(amd0, 5)
    for x, y in zip(_leaves((a.student, a.critic)), _leaves((b.student, b.critic))):
        assert np.array_equal(x, y)
    # without reward.monitor DMD2 is another program (no reward computation): the same updates to float rounding
    quiet = dmd2.copy_and_resolve_references()
    quiet.reward.monitor = False
    assert _lowered_steps(quiet) != _lowered_steps(dmd2)
    q = run_toy_steps(quiet, 5)
    assert _max_excess(_leaves((q.student, q.critic)), _leaves((a.student, a.critic))) <= 1.0
    # and the knobs do act: s > 0 changes the student by far more than that tolerance (measured: ~60x)
    amd1 = amd0.copy_and_resolve_references()
    amd1.amd.s, amd1.amd.rls_lambda = 0.5, 1.0
    c = run_toy_steps(amd1, 5)
    assert _max_excess(_leaves(c.student), _leaves(a.student)) > 10.0


def test_no_gradient_reaches_teacher_or_reward_model():
    config = tiny_toy2d_config()
    config.gan.enabled = True
    config.amd.s, config.amd.rls_lambda = 0.7, 1.0
    task = tasks.build(config)
    models, data = task.models, task.data

    # a reward model WITH parameters: the true log-density, scaled and shifted by trainable-looking scalars
    def reward(params, x, cond):
        return params["scale"] * data.log_density(x, cond["label"]) + params["shift"]

    models = models.__class__(**{**models.__dict__, "reward": reward})
    steps = Steps(config, models)
    teacher = models.init_denoiser(jax.random.PRNGKey(1))
    frozen = {"teacher": teacher, "reward": {"scale": jnp.float32(1.0), "shift": jnp.float32(0.0)}}
    state = steps.init(teacher, jax.random.PRNGKey(0))
    batch = jax.tree_util.tree_map(jnp.asarray, data.global_batch(0, config.global_batch))

    g_frozen = jax.grad(lambda f: steps.generator_loss(state.student, state, f, batch)[0])(frozen)
    assert all(np.all(g == 0) for g in _leaves(g_frozen))
    x, r = steps.sample_step(state, frozen, batch)
    g_crit = jax.grad(lambda f: steps.critic_loss(state.critic, state, f, batch, x, r)[0])(frozen)
    assert all(np.all(g == 0) for g in _leaves(g_crit))
    # the student does receive a gradient (the test above is not vacuous)
    g_student = jax.grad(lambda p: steps.generator_loss(p, state, frozen, batch)[0])(state.student)
    assert any(np.any(g != 0) for g in _leaves(g_student))


@pytest.fixture(scope="module")
def eight_device_run(tmp_path_factory):
    config = tiny_toy2d_config()
    config.mesh.shape = (4, 2)
    workdir = tmp_path_factory.mktemp("run8")
    state = train(Session(config, str(workdir)))
    return config, workdir, state


def test_eight_devices_match_one_device(eight_device_run, tmp_path):
    config, workdir, state8 = eight_device_run
    assert len(jax.devices()) == 8
    leaf = jax.tree_util.tree_leaves(state8.student)[0]
    assert len(leaf.sharding.device_set) == 8
    one = config.copy_and_resolve_references()
    one.mesh.shape = (1, 1)
    one.teacher.dir = str(workdir / "teacher")  # same teacher
    state1 = train(Session(one, str(tmp_path), devices=jax.devices()[:1]))
    for a, b in zip(_leaves((state8.student, state8.critic)), _leaves((state1.student, state1.critic))):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_resume_after_kill_matches_uninterrupted_run(eight_device_run, tmp_path):
    config, workdir, state_full = eight_device_run
    cfg = config.copy_and_resolve_references()
    cfg.teacher.dir = str(workdir / "teacher")
    # "kill" at step 6: the last checkpoint is step 4 (every 4), steps 5-6 are lost as in a crash
    train(Session(cfg, str(tmp_path)), stop_after=6)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [4]
    resumed = Session(cfg, str(tmp_path))
    assert resumed.resume_step == 4
    state = train(resumed)
    for a, b in zip(_leaves(state_full), _leaves(state)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_toy2d_writes_eval_json_and_plot(eight_device_run):
    config, workdir, _ = eight_device_run
    metrics = json.loads((workdir / "eval.json").read_text())
    for key in ("precision", "mode_coverage", "recall", "swd", "mmd", "reward_mean", "zone_fraction"):
        assert key in metrics and np.isfinite(metrics[key])
    assert 0.0 <= metrics["precision"] <= 1.0 and metrics["num_samples"] == config.eval.num_samples
    assert (workdir / "samples" / "samples_final.png").stat().st_size > 1000
    teacher = json.loads((workdir / "teacher" / "eval.json").read_text())  # the teacher's own DDIM-50 quality
    assert teacher["sampler"] == "ddim50" and 0.0 <= teacher["precision"] <= 1.0
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))


def test_prefetched_batches_and_profiler_window(tmp_path):
    """The loop's prefetcher hands out exactly the session's batches (in order, and after a jump); the profiler
    window writes a trace."""
    from amd_jax.loop import Prefetcher

    config = tiny_toy2d_config()
    session = Session(config, str(tmp_path / "s"))
    batches = Prefetcher(session, 3, session.batch(3), total_steps=12)
    for step in (3, 4, 5, 9, 10, 11):
        got, want = batches.get(step), session.batch(step)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            assert np.array_equal(np.asarray(a), np.asarray(b)) and a.sharding == b.sharding
    batches.close()
    config.train.profile_steps, config.total_steps, config.log.sample_every = (2, 4), 4, 0
    train(Session(config, str(tmp_path / "p")))
    assert list((tmp_path / "p" / "profile").rglob("*.xplane.pb"))
