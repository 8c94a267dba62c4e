"""The offline evaluation job reproduces the in-training evaluation and tabulates every checkpoint."""

import json

import jax
import numpy as np

from amd_jax.evaluate import Evaluator
from amd_jax.loop import train
from amd_jax.session import Session
from tiny import tiny_toy2d_config


def test_evaluate_checkpoints_matches_training_eval(tmp_path):
    config = tiny_toy2d_config()
    config.total_steps, config.checkpoint.every, config.log.sample_every = 8, 4, 0
    train(Session(config, str(tmp_path)))
    at_end = json.loads((tmp_path / "eval.json").read_text())

    ev = Evaluator(config, str(tmp_path))
    assert ev.checkpoint_steps() == [4, 8]
    final = ev.evaluate(8)
    for key in ("precision", "recall", "swd", "mmd", "reward_mean", "zone_fraction", "mode_coverage"):
        assert final[key] == at_end[key], key  # same checkpoint, same sampler seed: the same numbers
    ev.evaluate(4)
    assert ev.steps_done() == {4, 8}
    table = (tmp_path / "eval" / "results.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| 4 |") and table[3].startswith("| 8 |")
    assert (tmp_path / "eval" / "samples_0000004.png").exists()

    # the metric's own sampling noise: 3 disjoint sample sets of the same checkpoint, the first being eval_8's
    noise = ev.noise(8, repeats=3)
    assert noise == json.loads((tmp_path / "eval" / "noise_0000008.json").read_text())
    for key in ("precision", "swd", "mmd"):
        values = noise["metrics"][key]["values"]
        assert len(values) == 3 and values[0] == final[key], key
        assert len(set(values)) == 3, key  # other noise, other samples
        assert np.isclose(noise["metrics"][key]["std"], np.std(values, ddof=1)), key
        assert np.isclose(noise["metrics"][key]["mean"], np.mean(values)), key


def test_offline_evaluation_reads_only_the_student_and_never_the_teacher(tmp_path):
    config = tiny_toy2d_config()
    config.total_steps, config.checkpoint.every, config.log.sample_every = 4, 4, 0
    train(Session(config, str(tmp_path)))
    session = Session(config, str(tmp_path), training=False)
    full = session.restore(4)
    student = session.restore_student(4)  # a partial read of the checkpoint, verified against its checksums
    for a, b in zip(jax.tree_util.tree_leaves(full.student), jax.tree_util.tree_leaves(student)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # the teacher moved away and no training allowed: loading it would raise, the evaluation must not need it
    (tmp_path / "teacher").rename(tmp_path / "teacher_gone")
    offline = config.copy_and_resolve_references()
    offline.teacher.dir, offline.teacher.train_if_missing = str(tmp_path / "teacher"), False
    offline.total_steps = 2  # an evaluation is no resume: a checkpoint past total_steps is fine
    metrics = Evaluator(offline, str(tmp_path)).evaluate(4)
    assert metrics["step"] == 4 and np.isfinite(metrics["precision"])


def test_read_only_open_does_not_warn_that_the_folder_is_read_only(tmp_path, caplog):
    """Orbax warns 'Given directory is read only' whenever a manager is opened read-only (a writable folder too);
    the offline evaluation opens checkpoints/ so on purpose, and that warning is dropped."""
    import logging

    import orbax.checkpoint as ocp

    from amd_jax.checkpoint import Checkpointer

    (tmp_path / "checkpoints").mkdir()
    with caplog.at_level(logging.WARNING):
        ocp.CheckpointManager(tmp_path / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
    assert "Given directory is read only" in caplog.text  # Orbax's own behaviour, which the test relies on
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        reader = Checkpointer(str(tmp_path), read_only=True)
        assert reader.steps() == []
    assert "read only" not in caplog.text
