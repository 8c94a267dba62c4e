"""The non-finite guard: skipped updates inside the jitted steps, the loop's stop, and evaluations that refuse NaN.

- A finite update is exactly the plain optax update (the guard changes no bit of a healthy run).
- A NaN loss or gradient leaves parameters and optimizer state bit-identical, still counts the iteration, and
  reports the skip.
- NonFiniteGuard stops after `limit` consecutive skipped iterations, not before; a clean iteration resets it.
- End to end (toy2d_tiny, --config.optim.student_lr=1e6): the run exits non-zero naming the knobs, writes no
  eval.json, and every checkpoint it wrote holds only finite values.
- Skipped updates are counted over the whole run (checkpoint meta "updates"); a run that ends with more than
  train.max_skipped_fraction of its iterations skipped (--config.optim.critic_lr=1e5: 10 of 12) exits 1 saying
  the fraction, with no eval.json; the knob is validated in [0, 1].
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from amd_jax import steps as steps_lib
from amd_jax import writers
from amd_jax.checkpoint import Checkpointer
from amd_jax.errors import NonFiniteError
from amd_jax.loop import NonFiniteGuard
from amd_jax.session import Session
from procs import Train
from tiny import tiny_toy2d_config, toy_steps


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def _same(a, b) -> bool:
    return all(np.array_equal(x, y, equal_nan=True) for x, y in zip(_leaves(a), _leaves(b)))


@pytest.fixture(scope="module")
def setup():
    config = tiny_toy2d_config()
    steps, frozen, state, data = toy_steps(config)
    batch = jax.tree_util.tree_map(jnp.asarray, data.global_batch(0, config.global_batch))
    return steps, frozen, state, batch


def _poison(state, part: str):
    """A NaN in one weight of the student or the critic."""
    leaves, tree = jax.tree_util.tree_flatten(getattr(state, part))
    leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].set(jnp.nan)
    return state.replace(**{part: jax.tree_util.tree_unflatten(tree, leaves)})


def test_finite_update_is_the_plain_optax_update(setup):
    """The guarded step against the step as written before the guard (same outputs, so XLA sees the same program
    but for the select), both jitted: a healthy update is the plain update to within 2 ulp. Not bit for bit: XLA
    may fuse the two programs differently (measured: one bias element 1 ulp apart on an AMD EPYC with AVX-512,
    bit-identical on the machine the test was written on). The guard's select itself keeps every bit (below)."""
    steps, frozen, state, batch = setup
    for _ in range(3):  # past the warm-up's zero learning rate
        state, x, r, _ = jax.jit(steps.generator_step)(state, frozen, batch)
        state, _ = jax.jit(steps.critic_step)(state, frozen, batch, x, r)

    def unguarded(state, frozen, batch):
        (_, (x, rewards, metrics)), grads = jax.value_and_grad(steps.generator_loss, has_aux=True)(
            state.student, state, frozen, batch)
        updates, opt = steps.student_tx.update(grads, state.student_opt, state.student)
        metrics["grad_norm_student"] = optax.tree.norm(grads)
        return state.replace(student=optax.apply_updates(state.student, updates), student_opt=opt), x, rewards, metrics

    new, _, _, m = jax.jit(steps.generator_step)(state, frozen, batch)
    ref = jax.jit(unguarded)(state, frozen, batch)[0]
    assert float(m["skipped_generator"]) == 0.0
    for got, want in zip(_leaves((new.student, new.student_opt)), _leaves((ref.student, ref.student_opt))):
        np.testing.assert_array_max_ulp(got, want, maxulp=2)
    assert not _same(new.student, state.student)  # the update did something
    kept = steps_lib._if_finite(jnp.asarray(True), ref.student, state.student)
    assert _same(kept, ref.student) and _same(steps_lib._if_finite(jnp.asarray(False), ref.student, state.student),
                                              state.student)


def test_nan_critic_update_is_skipped(setup):
    steps, frozen, state, batch = setup
    bad = _poison(state, "critic")  # the critic's denoising loss is NaN
    x, r = jax.jit(steps.sample_step)(bad, frozen, batch)
    new, m = jax.jit(steps.critic_step)(bad, frozen, batch, x, r)
    assert float(m["skipped_critic"]) == 1.0 and not np.isfinite(float(m["loss_critic"]))
    assert _same(new.critic, bad.critic) and _same(new.critic_opt, bad.critic_opt)
    assert int(new.step) == int(bad.step) + 1  # the iteration still counts: the next one draws new noise


def test_nan_generator_update_is_skipped(setup):
    steps, frozen, state, batch = setup
    # (a NaN fake score alone would not do: DMD2's gradient goes through nan_to_num, method/dmd.py)
    bad = _poison(state, "student")  # the student's samples and so its loss are NaN
    new, _, _, m = jax.jit(steps.generator_step)(bad, frozen, batch)
    assert float(m["skipped_generator"]) == 1.0 and not np.isfinite(float(m["grad_norm_student"]))
    assert _same(new.student, bad.student) and _same(new.student_opt, bad.student_opt)


def test_guard_stops_after_limit_consecutive_skips():
    guard = NonFiniteGuard(3, tiny_toy2d_config())
    flags = [0, 1, 1, 0, 1, 1]  # never 3 in a row
    for step, f in enumerate(flags, 1):
        guard.observe(step, {"skipped_critic": np.float32(f)})
    guard.flush()
    assert guard.total == 4 and guard.consecutive == 2
    guard.observe(7, {"skipped_generator": np.float32(1), "skipped_critic": np.float32(1)})
    with pytest.raises(NonFiniteError, match=r"3 consecutive iterations \(up to step 7\).*optim.student_lr"):
        guard.flush()


def test_eval_json_refuses_non_finite_metrics(tmp_path):
    writers.save_eval_json(tmp_path / "eval.json", {"fid": 1.5, "method": "amd"})
    assert json.loads((tmp_path / "eval.json").read_text())["fid"] == 1.5
    with pytest.raises(NonFiniteError, match="fid=nan"):
        writers.save_eval_json(tmp_path / "eval_2.json", {"fid": float("nan"), "recall": 0.5})
    assert not (tmp_path / "eval_2.json").exists()
    failed = json.loads((tmp_path / "eval_2.failed.json").read_text())  # valid JSON: NaN stored as a string
    assert failed["fid"] == "nan" and failed["recall"] == 0.5 and "fid" in failed["failed"]


def test_diverging_run_stops_with_finite_checkpoints(tmp_path):
    workdir = tmp_path / "run"
    args = ["--config.optim.student_lr=1e6", "--config.total_steps=40", "--config.train.max_nonfinite=4",
            "--config.checkpoint.every=2", "--config.checkpoint.keep=3"]
    with Train(workdir, args) as run:
        code = run.wait(timeout=300)[0]
        out = run.out()
    assert code != 0 and "Run stopped: 4 consecutive iterations" in out and "optim.student_lr=1000000.0" in out
    assert not (workdir / "eval.json").exists()
    config = tiny_toy2d_config(**{"optim.student_lr": 1e6})
    session = Session(config, str(workdir))
    steps = session.ckpt.steps()
    assert steps and max(steps) < 40
    for step in steps:
        state, _ = Checkpointer(str(workdir)).restore(step, session.abstract_state, session.state_sh)
        assert all(np.all(np.isfinite(a)) for a in _leaves(state) if np.issubdtype(a.dtype, np.floating))


# ------------------------------------------------------------------------------------------- skipped updates
def test_guard_counts_skipped_iterations_over_the_whole_run():
    config = tiny_toy2d_config()
    guard = NonFiniteGuard(20, config, counts={"iterations": 8, "skipped_iterations": 0})  # resumed at step 8
    for step, (g, c) in enumerate([(0, 1), (1, 1), (0, 0), (0, 1)], 9):
        guard.observe(step, {"skipped_generator": np.float32(g), "skipped_critic": np.float32(c)})
    guard.settle()  # what a checkpoint's meta records: every iteration run so far
    assert guard.counts() == {"iterations": 12, "skipped_iterations": 3} and guard.total == 4
    with pytest.raises(NonFiniteError, match=r"3 of 12 iterations \(25\.0%\) skipped their update .*more than "
                                             r"train\.max_skipped_fraction=0\.1: .*no eval\.json was written"):
        guard.final_check()
    config.train.max_skipped_fraction = 0.25
    NonFiniteGuard(20, config, counts=guard.counts()).final_check()  # at the threshold: a warning only


def test_max_skipped_fraction_is_validated():
    from amd_jax.config import validate
    from amd_jax.errors import ConfigError

    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=r"train\.max_skipped_fraction="):
            validate(tiny_toy2d_config(**{"train.max_skipped_fraction": bad}), 1)
    validate(tiny_toy2d_config(**{"train.max_skipped_fraction": 1.0}), 1)


def test_mostly_skipped_run_fails_without_eval_json(tmp_path):
    """--config.optim.critic_lr=1e5: the critic's updates overflow at 10 of the 12 iterations, never 20 in a row (the
    consecutive stop); before, the run exited 0 with a normal eval.json."""
    workdir = tmp_path / "run"
    with Train(workdir, ["--config.optim.critic_lr=1e5", "--config.mesh.shape=(1,1)"]) as run:
        code = run.wait(timeout=300)[0]
    out = run.out()
    assert code == 1 and re.search(r"Run stopped: 10 of 12 iterations \(83\.3%\) skipped their update for a NaN/inf "
                                   r"loss or gradient, more than train\.max_skipped_fraction=0\.1: .*no eval\.json "
                                   r".*optim\.critic_lr=100000\.0", out), out[-3000:]
    assert not (workdir / "eval.json").exists() and "Traceback" not in out
    meta = json.loads((workdir / "checkpoints" / "12" / "meta" / "metadata").read_text())
    assert meta["updates"] == {"iterations": 12, "skipped_iterations": 10}  # counted across resumes
    with Train(workdir, ["--config.optim.critic_lr=1e5", "--config.mesh.shape=(1,1)",
                         "--config.train.max_skipped_fraction=1.0"], tag="accept") as run:  # accepted on purpose
        assert run.wait(timeout=300) == [0], run.out()[-3000:]
    assert "10 of 12 iterations (83.3%) skipped their update" in run.out() and (workdir / "eval.json").exists()
