"""The evaluator registry (amd_jax/evaluators.py) and the task's config check that the session runs before building."""

import json
import logging
import os
import sys
import types

import ml_collections
import numpy as np
import pytest

from amd_jax import tasks
from amd_jax.config import check_resume, load
from amd_jax.errors import ConfigError
from amd_jax.loop import train
from amd_jax.session import Session
from amd_jax.writers import read_jsonl
from tiny import ROOT, tiny_toy2d_config


def test_an_added_evaluator_runs_at_its_cadence_on_its_own_samples(tmp_path, caplog):
    """evals.mid (every 4 steps and at the end, 64 samples, seed 5) writes eval/mid/<metric> at steps 4 and 8,
    mid_samples PNGs and eval_mid.json, whose metrics are those of 64 samples of seed 5 computed here directly;
    the 'samples' and 'final' evaluators of log.sample_every / eval.at_end keep their outputs and sample counts
    (announced; the count is in the results files, not a curve)."""
    caplog.set_level(logging.INFO, logger="amd_jax")
    config = tiny_toy2d_config(**{"total_steps": 8, "checkpoint.every": 8})
    config.evals.mid = ml_collections.ConfigDict({"every": 4, "at_end": True, "num_samples": 64, "seed": 5})
    session = Session(config, str(tmp_path))
    state = train(session)

    rows = {r["step"]: r for r in read_jsonl(tmp_path / "metrics.jsonl")}
    assert [s for s in sorted(rows) if "eval/mid/precision" in rows[s]] == [4, 8]
    assert "eval/samples/precision" not in rows[4] and not any("num_samples" in k for r in rows.values() for k in r)
    assert "eval/samples/precision" in rows[8] and "eval/final/precision" in rows[8]
    said = [r.getMessage() for r in caplog.records]
    for name, step, n in (("mid", 4, 64), ("mid", 8, 64), ("samples", 8, 256), ("final", 8, 256)):  # min(256, 1024)
        assert f"Evaluation '{name}' at step {step}: {n} samples of the student ..." in said, (name, step)
    names = sorted(os.listdir(tmp_path / "samples"))
    assert names == ["mid_samples_0000004.png", "mid_samples_0000008.png", "mid_samples_final.png",
                     "samples_0000008.png", "samples_final.png"]
    mid = json.loads((tmp_path / "eval_mid.json").read_text())
    assert json.loads((tmp_path / "eval.json").read_text())["num_samples"] == 256

    gen = session.sampler(session.frozen(teacher=False))
    want, _ = session.evaluate(gen, state.student, 64, seed=5)
    assert mid["num_samples"] == 64 and mid["step"] == 8
    for key, value in want.items():
        np.testing.assert_allclose(mid[key], value, rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("name, entry, match", [
    ("samples", {"every": 4, "num_samples": 64}, r"evals\.samples: the evaluator 'samples' is set by log\.sample_ev"),
    ("x", {"every": 4, "num_samples": 64, "often": 2}, r"evals\.x: unknown field\(s\) \['often'\]"),
    ("x", {"type": "teacher", "every": 4, "num_samples": 64}, r"evals\.x\.type='teacher': use one of \['task'\]"),
    ("x", {"every": -1, "num_samples": 64}, r"evals\.x\.every=-1: an integer >= 0"),
    ("x", {"num_samples": 64}, r"evals\.x: every=0 and at_end=False, so it never runs: set --config\.evals\.x\.every"),
    ("x", {"at_end": True, "num_samples": 16}, r"evals\.x\.num_samples=16: .*>= global_batch=32"),
    ("x", {"at_end": True}, r"evals\.x\.num_samples=None"),
])
def test_an_evaluator_that_cannot_run_is_refused_before_the_task_is_built(name, entry, match, tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "build", _never_build)
    config = tiny_toy2d_config()
    config.evals[name] = ml_collections.ConfigDict(entry)
    with pytest.raises(ConfigError, match=match):
        Session(config, str(tmp_path))


def test_a_checkpoint_without_evals_resumes_with_added_evaluators():
    """Checkpoints written before config.evals existed hold no 'evals' key; adding evaluators changes no update."""
    saved = tiny_toy2d_config().to_dict()
    del saved["evals"]
    current = tiny_toy2d_config()
    current.evals.mid = ml_collections.ConfigDict({"every": 4, "num_samples": 64})
    check_resume(saved, current.to_dict(), step=4)  # raises on a refused difference


def _never_build(config, mesh=None):
    raise AssertionError("the task was built before its config was checked")


def test_the_session_runs_the_task_check_before_the_mesh_and_the_task(monkeypatch, tmp_path):
    """A task module's check(config) refuses the config before the session makes a mesh or builds the task."""
    module = types.ModuleType("checked_task")
    module.check = lambda config: (_ for _ in ()).throw(ConfigError(f"checked_task refuses seed={config.seed}"))
    module.build = _never_build
    monkeypatch.setitem(sys.modules, "checked_task", module)
    monkeypatch.setitem(tasks._TASKS, "checked", "checked_task")
    monkeypatch.setattr("amd_jax.session.mesh_lib.make_mesh", lambda *a: _never_build(None))
    with pytest.raises(ConfigError, match="checked_task refuses seed=3"):
        Session(tiny_toy2d_config(**{"experiment": "checked", "seed": 3}), str(tmp_path))


def test_the_session_checks_the_task_once_before_building_it(monkeypatch, tmp_path):
    """config.validate runs the task's check, once per Session; tasks.build does not check again."""
    calls = []

    class Built(Exception):
        pass

    module = types.ModuleType("counted_task")
    module.check = lambda config: calls.append("check")
    module.build = lambda config, mesh=None: (calls.append("build"), (_ for _ in ()).throw(Built()))
    monkeypatch.setitem(sys.modules, "counted_task", module)
    monkeypatch.setitem(tasks._TASKS, "counted", "counted_task")
    with pytest.raises(Built):
        Session(tiny_toy2d_config(experiment="counted"), str(tmp_path))
    assert calls == ["check", "build"]


def test_sdxl_check_refuses_a_missing_model_before_building(monkeypatch, tmp_path):
    import amd_jax.tasks.sdxl as sdxl

    monkeypatch.setattr(sdxl, "build", _never_build)
    config = load(os.path.join(ROOT, "configs", "sdxl_tiny.py"), {"model.path": ""})
    with pytest.raises(ConfigError, match="model.path is empty: set --config.model.path"):
        Session(config, str(tmp_path))
