"""The student's EMA (student.ema_decay) on toy2d_tiny.

- The EMA after several TTUR iterations equals a NumPy reference fed the student after each applied update.
- A skipped (NaN) generator update leaves the EMA bit-identical.
- decay 0 is today's run: a plain TrainState (no EMA leaf), and the EMA never changes the student or the critic
  (to float rounding: two programs).
- validate refuses decays outside [0, 1); check_resume treats a checkpoint config without the key as decay 0, so a
  checkpoint written before the knob existed resumes (and refuses an EMA config, whose state it lacks).
- End to end: raw and EMA metrics (metrics.jsonl, eval.json, images, the offline evaluation), and a run stopped
  after a checkpoint resumes to exactly the uninterrupted run's state, EMA included.
- On 8 devices (data=4, fsdp=2) the EMA leaves get the student's shardings, even under rules that name student/.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax import writers
from amd_jax.config import check_resume, validate
from amd_jax.errors import ConfigError
from amd_jax.evaluate import Evaluator
from amd_jax.loop import train
from amd_jax.parallel.sharding import tree_shardings
from amd_jax.session import Session
from amd_jax.steps import EmaTrainState, TrainState
from tiny import run_toy_steps, tiny_toy2d_config, toy_steps

DECAY = 0.9


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def _ema_config(decay=DECAY):
    return tiny_toy2d_config(**{"student.ema_decay": decay})


def test_ema_matches_numpy_reference():
    config = _ema_config()
    _, _, state0, _ = toy_steps(config)
    assert isinstance(state0, EmaTrainState) and _same(state0.student_ema, state0.student)  # starts at the teacher
    ref = [np.asarray(a, np.float64) for a in _leaves(state0.student)]

    def update(state):
        for i, s in enumerate(_leaves(state.student)):
            ref[i] = DECAY * ref[i] + (1 - DECAY) * s.astype(np.float64)

    state = run_toy_steps(config, 7, update)  # 4 generator updates (ttur 2), warm-up over
    for got, want in zip(_leaves(state.student_ema), ref, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    moved = [np.max(np.abs(e - s)) for e, s in zip(_leaves(state.student_ema), _leaves(state.student))]
    assert max(moved) > 1e-4  # the EMA really lags the student: the comparison above is not student == ema


def test_skipped_update_leaves_ema_unchanged():
    config = _ema_config()
    steps, frozen, state, data = toy_steps(config)
    batch = jax.tree_util.tree_map(jnp.asarray, data.global_batch(0, config.global_batch))
    gen = jax.jit(steps.generator_step)
    for _ in range(3):  # an EMA that differs from the student, past the warm-up
        state, _, _, _ = gen(state, frozen, batch)
    assert not _same(state.student_ema, state.student)
    leaves, tree = jax.tree_util.tree_flatten(state.student)
    leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].set(jnp.nan)
    poisoned = state.replace(student=jax.tree_util.tree_unflatten(tree, leaves))
    after, _, _, metrics = gen(poisoned, frozen, batch)
    assert float(metrics["skipped_generator"]) == 1.0
    assert _same(after.student_ema, state.student_ema)
    healthy, _, _, metrics = gen(state, frozen, batch)  # the same step without the NaN does move it
    assert float(metrics["skipped_generator"]) == 0.0 and not _same(healthy.student_ema, state.student_ema)


def test_decay_zero_is_the_plain_train_state_and_ema_changes_no_training_value():
    plain = run_toy_steps(tiny_toy2d_config(), 5)
    assert type(plain) is TrainState
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(plain)[0]]
    assert not any("ema" in p for p in paths)
    assert [f for f in TrainState.__dataclass_fields__] == ["step", "rng", "student", "critic", "student_opt",
                                                           "critic_opt"]
    with_ema = run_toy_steps(_ema_config(), 5)
    # Two programs (the EMA one has an extra output): XLA may fuse them differently by an ulp on some CPUs
    # (tests/test_nonfinite.py measured one), so floats agree to a tolerance, integers (step, rng, counts) exactly.
    for name in TrainState.__dataclass_fields__:
        for a, b in zip(_leaves(getattr(plain, name)), _leaves(getattr(with_ema, name)), strict=True):
            if np.issubdtype(a.dtype, np.floating):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=name)
            else:
                np.testing.assert_array_equal(b, a, err_msg=name)
    # not vacuous: the EMA lags the student by far more than that tolerance, so an EMA leaking into the training
    # state (the student replaced by its EMA, say) would show (measured: ~1300x the tolerance)
    lag = [np.max(np.abs(e - s) / (1e-7 + 1e-5 * np.abs(s)))
           for e, s in zip(_leaves(with_ema.student_ema), _leaves(with_ema.student))]
    assert max(lag) > 100.0, max(lag)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_validate_refuses_decay_outside_unit_interval(bad):
    with pytest.raises(ConfigError, match="student.ema_decay"):
        validate(_ema_config(bad), 1)


def test_old_checkpoint_config_without_the_key_resumes_with_decay_zero():
    current = tiny_toy2d_config().to_dict()
    saved = json.loads(json.dumps(current))
    del saved["student"]["ema_decay"]  # a checkpoint written before the knob existed
    check_resume(saved, current, 4)
    with pytest.raises(ConfigError, match=r"student.ema_decay: 0.0 -> 0.9"):  # absent = its default, 0
        check_resume(saved, _ema_config().to_dict(), 4)
    with pytest.raises(ConfigError, match=r"student.ema_decay: 0.9 -> 0.99"):
        check_resume(_ema_config().to_dict(), _ema_config(0.99).to_dict(), 4)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """A full toy2d_tiny run with EMA (8 devices, data-parallel)."""
    config = _ema_config()
    workdir = tmp_path_factory.mktemp("ema_run")
    state = train(Session(config, str(workdir)))
    return config, workdir, state


def test_run_writes_raw_and_ema_metrics(ema_run):
    config, workdir, state = ema_run
    assert not _same(state.student_ema, state.student)
    result = json.loads((workdir / "eval.json").read_text())
    raw = [k for k, v in result.items() if writers.is_number(v) and k not in ("step", "seed")
           and not k.startswith("ema_")]
    assert "precision" in raw and "swd" in raw
    for key in raw:
        assert np.isfinite(result[f"ema_{key}"]), key
    assert result["ema_num_samples"] == result["num_samples"] == config.eval.num_samples
    logged = {k for row in writers.read_jsonl(workdir / "metrics.jsonl") for k in row}
    for key in ("eval/samples/precision", "eval/samples/ema/precision", "eval/final/precision",
                "eval/final/ema/precision"):
        assert key in logged, key
    for name in ("samples_final.png", "samples_ema_final.png", "samples_0000008.png", "samples_ema_0000008.png"):
        assert (workdir / "samples" / name).stat().st_size > 1000, name

    ev = Evaluator(config, str(workdir))  # offline: the same checkpoint and seed give the same two sets of numbers
    offline = ev.evaluate(config.total_steps)
    for key in ("precision", "swd", "ema_precision", "ema_swd"):
        assert offline[key] == result[key], key
    assert _same(Session(config, str(workdir), training=False).restore_student_ema(12), state.student_ema)
    assert (workdir / "eval" / "samples_ema_0000012.png").exists()


def test_resume_after_stop_is_bit_identical(ema_run, tmp_path):
    config, workdir, full = ema_run
    cfg = config.copy_and_resolve_references()
    cfg.teacher.dir = str(workdir / "teacher")
    cfg.eval.at_end, cfg.log.sample_every = False, 0  # resume-free keys: only the state is compared here
    train(Session(cfg, str(tmp_path)), stop_after=6)
    resumed = Session(cfg, str(tmp_path))
    assert resumed.resume_step == 4
    state = train(resumed)
    assert _same(state, full) and _same(state.student_ema, full.student_ema)


@pytest.mark.parametrize("rules", [(), ((r"^student/", ()),)], ids=["fsdp_default", "rule_for_student"])
def test_ema_sharding_is_the_students_on_eight_devices(tmp_path, rules):
    config = _ema_config()
    config.mesh.shape, config.sharding.rules = (4, 2), rules
    session = Session(config, str(tmp_path))
    assert len(jax.devices()) == 8
    by_rules = tree_shardings(session.abstract_state, session.mesh, rules, config.sharding.fsdp_min_size)
    teacher = session.models.init_denoiser(jax.random.PRNGKey(1))
    state = jax.jit(session.steps.init, out_shardings=session.state_sh)(teacher, jax.random.PRNGKey(0))
    specs = lambda tree: [a.sharding.spec for a in jax.tree_util.tree_leaves(tree)]
    assert specs(state.student_ema) == specs(state.student)
    assert [s.spec for s in jax.tree_util.tree_leaves(session.state_sh.student_ema)] == specs(state.student)
    if rules:  # a rule written for student/... would miss student_ema/...: the session gives it the student's
        assert all(s == jax.sharding.PartitionSpec() for s in specs(state.student))
        assert [s.spec for s in jax.tree_util.tree_leaves(by_rules.student_ema)] != specs(state.student)
    else:  # the kernels really are FSDP-sharded
        assert any("fsdp" in s for s in specs(state.student_ema))


def test_checkpoint_written_before_the_knob_resumes(ema_run, tmp_path):
    """A checkpoint whose saved config has no student.ema_decay (older code) resumes with today's default 0."""
    _, workdir, _ = ema_run
    cfg = tiny_toy2d_config()
    cfg.teacher.dir = str(workdir / "teacher")
    cfg.eval.at_end, cfg.log.sample_every = False, 0
    train(Session(cfg, str(tmp_path)), stop_after=4)
    (meta_file,) = (tmp_path / "checkpoints" / "4" / "meta").glob("metadata")
    meta = json.loads(meta_file.read_text())
    del meta["config"]["student"]["ema_decay"]
    meta_file.write_text(json.dumps(meta))
    resumed = Session(cfg, str(tmp_path))
    assert resumed.resume_step == 4
    assert int(train(resumed).step) == cfg.total_steps
    with pytest.raises(ConfigError, match="missing in checkpoint: student_ema/"):  # EMA on: that state has none
        Session(_ema_config(), str(tmp_path))
