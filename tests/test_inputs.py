"""What a run trains from, identified by content (amd_jax/inputs.py), and the other items of issue 25 around it.

- A resume cannot switch the teacher (or the reward, or a data file) silently: the checkpoints' meta records a
  content digest of each; another teacher under the same key is refused in one line, the same teacher moved
  elsewhere resumes, and resume.allow_changes lets a change through on purpose.
- `experiment` is compared before the task is built (another task's config gave `KeyError: 'zone'`).
- No JSON output holds a bare NaN/Infinity (writers.json_text: null plus a note).
- An SDXL shard index cannot name files outside its folder.
- SIGTERM during the teacher's training ends the job with one line and no partial teacher.
"""

import json
import math
import os
import shutil
import signal

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from amd_jax import inputs, tasks, writers
from amd_jax.checkpoint import Checkpointer
from amd_jax.errors import ConfigError, DamagedFileError
from amd_jax.loop import train
from amd_jax.models.common import hf_folders
from amd_jax.session import Session
from amd_jax.tasks import common as task_common
from amd_jax.tasks import teacher as teacher_lib
from procs import Train
from tiny import tiny_toy2d_config

# one device, one checkpoint at step 4, no samples, no evaluation: the resume is what is tested
ARGS = {"mesh.shape": (1, 1), "total_steps": 4, "checkpoint.every": 4, "log.sample_every": 0, "eval.at_end": False}


def _config(**overrides):
    return tiny_toy2d_config(**{**ARGS, **overrides})


def _session(config, workdir):
    return Session(config, str(workdir), devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 4-step toy2d_tiny run with its first-use teacher in WORKDIR/teacher."""
    wd = tmp_path_factory.mktemp("inputs") / "run"
    train(_session(_config(), wd))
    return wd


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory):
    """A teacher of the same model trained with another seed: another content under the same kind of folder."""
    config = _config(**{"teacher.seed": 1})
    config.teacher.dir = str(tmp_path_factory.mktemp("other") / "teacher")
    task = tasks.build(config)
    teacher_lib.load_or_train(config, task.models, task.data)
    return config.teacher.dir


def _copy(finished, tmp_path):
    wd = tmp_path / "run"
    shutil.copytree(finished, wd)
    return wd


def _recorded(wd, step=4) -> dict:
    return json.loads((wd / "checkpoints" / str(step) / "meta" / "metadata").read_text())["inputs"]


def test_checkpoints_record_the_teachers_content_digest(finished):
    recorded = _recorded(finished)
    assert list(recorded) == ["teacher.dir"] and len(recorded["teacher.dir"]) == 16
    # the teacher report describes the same teacher
    assert json.loads((finished / "teacher" / "eval.json").read_text())["teacher_digest"] == recorded["teacher.dir"]


def test_resume_with_another_teacher_is_refused_in_one_line(finished, other_teacher, tmp_path):
    wd = _copy(finished, tmp_path)
    session = _session(_config(**{"total_steps": 8, "teacher.dir": other_teacher}), wd)
    with pytest.raises(ConfigError) as e:
        session.frozen()
    msg = str(e.value)
    assert "\n" not in msg, msg
    old = _recorded(wd)["teacher.dir"]
    assert f"teacher.dir='{other_teacher}' holds content digest " in msg and f"teacher had {old}" in msg, msg
    assert "--workdir" in msg and "--config.resume.allow_changes=\"('teacher.dir',)\"" in msg, msg


def test_resume_with_the_same_teacher_moved_elsewhere_is_accepted(finished, tmp_path):
    wd = _copy(finished, tmp_path)
    moved = tmp_path / "elsewhere" / "teacher"
    shutil.move(str(wd / "teacher"), str(moved))
    session = _session(_config(**{"total_steps": 8, "teacher.dir": str(moved)}), wd)
    session.frozen()
    assert session.resume_step == 4 and session.ckpt.inputs == _recorded(wd)
    assert not (wd / "teacher").exists()  # loaded from where it was moved, not retrained


def test_allow_changes_continues_with_another_teacher_and_records_it(finished, other_teacher, tmp_path):
    wd = _copy(finished, tmp_path)
    overrides = {"total_steps": 8, "teacher.dir": other_teacher, "resume.allow_changes": ("teacher.dir",)}
    train(_session(_config(**overrides), wd))
    assert _recorded(wd, 8)["teacher.dir"] != _recorded(wd, 4)["teacher.dir"]


def test_another_experiment_is_refused_before_the_task_is_built(finished, tmp_path, monkeypatch):
    wd = _copy(finished, tmp_path)

    def build(*args, **kwargs):
        raise AssertionError("the task was built")

    monkeypatch.setattr(tasks, "build", build)
    with pytest.raises(ConfigError, match=r"trained with experiment='toy2d' \(newest: step 4\); this config runs "
                                          r"experiment='zones2d'.*new --workdir"):
        _session(_config(**{"total_steps": 8, "experiment": "zones2d"}), wd)
    assert sorted(os.listdir(wd / "checkpoints")) == ["4"]


def test_a_data_file_is_compared_by_content(tmp_path):
    """data.path (and data.embeddings, data.real): sha256 of the file; a copy elsewhere is the same data."""
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat\na dog\n")
    config = ConfigDict({"data": {"path": str(captions)}, "resume": {"allow_changes": ()}})
    saved = inputs.record(config, {}, None, None)
    assert list(saved) == ["data.path"]
    copy = tmp_path / "moved" / "captions.txt"
    copy.parent.mkdir()
    shutil.copy(captions, copy)
    config.data.path = str(copy)
    assert inputs.record(config, {}, saved, step=4) == saved
    copy.write_text("a cat\na bird\n")
    with pytest.raises(ConfigError, match=r"another data: data.path=.* holds content digest .*allow_changes"):
        inputs.record(config, {}, saved, step=4)
    config.resume.allow_changes = ("data",)
    assert inputs.record(config, {}, saved, step=4) != saved


# ------------------------------------------------------------------------------------------ JSON without NaN


def _strict(text: str):
    """json.loads that refuses NaN / Infinity, as strict JSON readers (JavaScript, jq, Go) do."""
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_save_json_writes_non_finite_values_as_null_with_a_note(tmp_path):
    writers.save_json(tmp_path / "x.json", {"fid": float("nan"), "ok": 1.5, "inner": {"swd": float("-inf")}})
    got = _strict((tmp_path / "x.json").read_text())
    assert got == {"fid": None, "ok": 1.5, "inner": {"swd": None},
                   "nonfinite": {"fid": "nan", "inner.swd": "-inf"}}
    writers.save_json(tmp_path / "y.json", {"fid": 2.0})  # finite: written as before, no note
    assert (tmp_path / "y.json").read_text() == json.dumps({"fid": 2.0}, indent=2, sort_keys=True)


def test_metrics_jsonl_holds_no_bare_nan_and_reads_back(tmp_path):
    w = writers.JsonlWriter(tmp_path / "metrics.jsonl")
    w.write_scalars(4, {"loss": float("nan"), "reward_mean": 1.0})
    w.close()
    line = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    assert _strict(line) == {"step": 4, "loss": None, "reward_mean": 1.0, "nonfinite": {"loss": "nan"}}
    (row,) = writers.read_jsonl(tmp_path / "metrics.jsonl")
    assert math.isnan(row["loss"]) and row["reward_mean"] == 1.0 and "nonfinite" not in row


def test_teacher_report_with_a_non_finite_metric_is_valid_json(tmp_path):
    config = _config()
    config.teacher.dir = str(tmp_path / "teacher")
    task_common.teacher_report(config, lambda: ({"mmd": float("nan"), "sampler": "ddim50"}, None))
    got = _strict((tmp_path / "teacher" / "eval.json").read_text())
    assert got == {"mmd": None, "sampler": "ddim50", "nonfinite": {"mmd": "nan"}}


# ---------------------------------------------------------------------------------- the SDXL shard index


@pytest.mark.parametrize("shard", ["../outside.safetensors", "sub/../../outside.safetensors",
                                   "/etc/outside.safetensors"])
def test_shard_index_cannot_leave_its_folder(tmp_path, shard):
    """By name: '..' or an absolute path. A link inside the folder is followed (the Hugging Face cache's files are
    links into its blobs/ folder)."""
    unet = tmp_path / "model" / "unet"
    (unet / "sub").mkdir(parents=True)
    (tmp_path / "model" / "outside.safetensors").write_bytes(b"x")
    (unet / "inside.safetensors").symlink_to(tmp_path / "model" / "outside.safetensors")
    index = {"weight_map": {"a": "inside.safetensors", "b": shard}}
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(DamagedFileError, match=r"lists shard\(s\) outside its folder .*" + shard.replace(".", r"\.")):
        hf_folders.weight_files(unet, "diffusion_pytorch_model")
    index["weight_map"]["b"] = "inside.safetensors"
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert hf_folders.weight_files(unet, "diffusion_pytorch_model") == [unet / "inside.safetensors"]


# ------------------------------------------------------------------------------ SIGTERM in the teacher stage


def test_sigterm_during_the_teachers_training_exits_in_one_line_with_no_partial_teacher(tmp_path):
    wd = tmp_path / "run"
    with Train(wd, ["--config.teacher.steps=100000"], tag="teacher") as run:
        run.wait_for(r"teacher step 100/100000 ", timeout=150)
        run.procs[0].send_signal(signal.SIGTERM)
        codes = run.wait(timeout=60)
    out = run.out()
    assert codes == [1], out[-3000:]
    assert "SIGTERM during the teacher's training (step " in out and "no teacher was saved in" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert not (wd / "teacher").exists() or "params" not in os.listdir(wd / "teacher")
    assert Checkpointer(str(wd)).steps() == []


def test_the_teacher_stores_the_checkpoints_checksums_of_its_arrays(finished):
    """The teacher's custom metadata holds amd_jax.checkpoint.digest's record of its arrays (digested as each
    process's own copy, local=True: the same numbers as the run checkpoints' digest of the same arrays)."""
    from amd_jax import checkpoint

    meta = json.loads((finished / "teacher" / "params" / "_CHECKPOINT_METADATA").read_text())
    stored = meta["custom_metadata"]["checksum"]
    config = _config()
    config.teacher.dir = str(finished / "teacher")
    task = tasks.build(config)
    params = teacher_lib.load_or_train(config, task.models, task.data)
    assert stored == {"algorithm": checkpoint.CHECKSUM, "arrays": checkpoint.digest(params)[0]}
    assert np.all([np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params)])
