"""Re-running a job: a finished run exits at once without compiling (amd_jax/run_files.py `finished`), a run whose
final evaluation is missing evaluates again without training, the resolved config is written to the workdir, and
the persistent compilation cache is on by default (amd_jax/cli.py `use_compilation_cache`)."""

import json
import os
import time

import jax
import ml_collections
import pytest

from amd_jax import cli, run_files
from amd_jax.config import load
from amd_jax.errors import ConfigError
from procs import REPO, Train

TINY = os.path.join(REPO, "configs", "toy2d_tiny.py")


# ------------------------------------------------------------------------------------ a whole run, then re-runs
@pytest.mark.slow
def test_finished_run_exits_without_compiling_and_missing_eval_runs_again(tmp_path, monkeypatch):
    """One tiny run (its own user cache folder, to show the tests' cache is the one used), then: re-run -> one line,
    rc 0, no model built, nothing compiled, nothing written; eval.json removed -> evaluated again, no step trained,
    the same numbers."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user_cache"))  # where the default cache would go
    workdir = tmp_path / "run"
    with Train(workdir, tag="first") as run:
        assert run.wait(600) == [0], run.out()[-3000:]
    assert not (tmp_path / "user_cache" / "amd_jax").exists()  # it used JAX_COMPILATION_CACHE_DIR (conftest)
    results = json.loads((workdir / "eval.json").read_text())
    recorded = json.loads((workdir / "config.json").read_text())
    assert recorded["total_steps"] == 12 and recorded["teacher"]["dir"] == str(workdir / "teacher")

    before = sorted((p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.is_file())
    t0 = time.time()
    with Train(workdir, tag="again") as again:
        assert again.wait(300) == [0], again.out()[-3000:]
    seconds = time.time() - t0
    out = again.out()
    assert f"Training is already finished (newest checkpoint at total_steps); results: {workdir / 'eval.json'}" in out
    assert "Compiled in" not in out and "Resumed from" not in out and "workdir lock" not in out
    after = sorted((p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.is_file())
    assert after == before  # nothing written, not even the lock
    assert seconds < 60  # imports only (about 2-5 s here); the first run compiled and trained

    (workdir / "eval.json").unlink()
    with Train(workdir, tag="eval_again") as rerun:
        assert rerun.wait(600) == [0], rerun.out()[-3000:]
    out = rerun.out()
    assert "Training is already finished (newest" not in out and "eval: " in out
    assert "step 4/12" not in out and "checkpoint 12: save" not in out  # no step trained, no checkpoint written
    assert json.loads((workdir / "eval.json").read_text()) == results  # same checkpoint, same seed


# ------------------------------------------------------------------------------- run_files.finished, in-process
def _fake_run(workdir, config, step: int, results: dict | None):
    """A workdir whose newest checkpoint's meta (the file checkpoint.newest_config reads) holds `config` at `step`,
    with eval.json = `results` (absent when None)."""
    meta = workdir / "checkpoints" / str(step) / "meta"
    meta.mkdir(parents=True)
    (meta / "metadata").write_text(json.dumps({"config": json.loads(json.dumps(config.to_dict(), default=str))}))
    if results is not None:
        (workdir / "eval.json").write_text(json.dumps(results))


def _tiny():
    return load(TINY)


def test_finished_needs_the_final_step_and_valid_results(tmp_path):
    config = _tiny()
    good = {"step": 12, "precision": 0.5, "method": "amd", "seed": 0}
    _fake_run(tmp_path, config, 12, good)
    assert run_files.finished(config, tmp_path) == [tmp_path / "eval.json"]

    longer = _tiny()
    longer.total_steps = 20  # extending a finished run: not finished
    assert run_files.finished(longer, tmp_path) is None
    other_eval = _tiny()
    other_eval.eval.num_samples = 512  # another evaluation asked for: it runs again
    assert run_files.finished(other_eval, tmp_path) is None
    other_method = _tiny()
    other_method.method = "dmd2"  # another experiment: refused as a resume would be
    with pytest.raises(ConfigError, match="method"):
        run_files.finished(other_method, tmp_path)

    for bad in ({**good, "step": 8}, {**good, "precision": None, "nonfinite": {"precision": "nan"}}):
        (tmp_path / "eval.json").write_text(json.dumps(bad))
        assert run_files.finished(config, tmp_path) is None, bad
    (tmp_path / "eval.json").write_text('{"step": 12, "precision": NaN}')
    assert run_files.finished(config, tmp_path) is None
    (tmp_path / "eval.json").write_text('{"step": 12, "precision": 0.5')  # truncated
    assert run_files.finished(config, tmp_path) is None
    (tmp_path / "eval.json").unlink()
    assert run_files.finished(config, tmp_path) is None


def test_finished_checks_every_at_end_results_file(tmp_path):
    config = _tiny()
    with config.unlocked():
        config.evals = ml_collections.ConfigDict({"big": {"at_end": True, "num_samples": 64}})
    _fake_run(tmp_path, config, 12, {"step": 12, "precision": 0.5})
    assert run_files.finished(config, tmp_path) is None  # eval_big.json missing
    (tmp_path / "eval_big.json").write_text(json.dumps({"step": 12, "precision": 0.4}))
    assert run_files.finished(config, tmp_path) == [tmp_path / "eval.json", tmp_path / "eval_big.json"]


def test_finished_without_any_checkpoint_or_at_end_evaluation(tmp_path):
    config = _tiny()
    assert run_files.finished(config, tmp_path) is None
    config.eval.at_end = False
    _fake_run(tmp_path, config, 12, None)
    assert run_files.finished(config, tmp_path) == []  # nothing to evaluate at the end: the checkpoint is the result


# ---------------------------------------------------------------------------------------- the resolved config
def test_write_config_keeps_each_start(tmp_path):
    config = _tiny()
    assert run_files.write_config(config, tmp_path, None) == tmp_path / "config.json"
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(config.to_json_best_effort())
    assert run_files.write_config(config, tmp_path, 8) is None  # a resume with the same values: nothing new

    config.total_steps = 24
    assert run_files.write_config(config, tmp_path, 12) == tmp_path / "config.0000012.json"
    assert json.loads((tmp_path / "config.json").read_text())["total_steps"] == 12  # the first start's, kept
    assert json.loads((tmp_path / "config.0000012.json").read_text())["total_steps"] == 24
    assert run_files.write_config(config, tmp_path, 16) is None  # the newest record already holds these values

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_files.write_config(_tiny(), fresh, None)
    config.total_steps = 30  # no checkpoint yet: nothing trained with the old values, config.json is replaced
    assert run_files.write_config(config, fresh, None) == fresh / "config.json"
    assert json.loads((fresh / "config.json").read_text())["total_steps"] == 30


# ------------------------------------------------------------------------------------ the compilation cache
@pytest.fixture
def restore_cache_config():
    names = ("jax_compilation_cache_dir", "jax_enable_compilation_cache", "jax_persistent_cache_min_compile_time_secs")
    saved = {n: getattr(jax.config, n) for n in names}
    yield
    for n, v in saved.items():
        jax.config.update(n, v)


@pytest.mark.usefixtures("restore_cache_config")
def test_compilation_cache_default_override_and_off(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = str(tmp_path / "xdg" / "amd_jax" / "jax")
    assert cli.use_compilation_cache() == expected and os.path.isdir(expected)
    assert jax.config.jax_compilation_cache_dir == expected and jax.config.jax_enable_compilation_cache
    assert jax.config.jax_persistent_cache_min_compile_time_secs == cli.MIN_COMPILE_SECONDS

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli.default_cache_dir() == str(tmp_path / "home" / ".cache" / "amd_jax" / "jax")

    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2.5")
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.5)  # what JAX read from the variable
    assert cli.use_compilation_cache() == str(tmp_path / "mine")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.5  # the user's value is kept

    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")
    assert cli.use_compilation_cache() == "" and not jax.config.jax_enable_compilation_cache

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(blocker / "cache"))  # cannot be created: off, one warning
    jax.config.update("jax_enable_compilation_cache", True)
    assert cli.use_compilation_cache() == "" and not jax.config.jax_enable_compilation_cache
