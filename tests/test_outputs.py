"""Every write of a run outside checkpoints/ goes through one guarded path (amd_jax/outputs.py).

- In-process: which errors are I/O failures (an OSError, Orbax's and TensorStore's wrapped ones) and which are not;
  `writing` names the folder and the cause; the start-up probe names a folder that refuses.
- End to end (toy2d_tiny): samples/ made read-only mid-run -> one line naming the folder and the cause, checkpoint 8
  saved first, exit 1; the rerun resumes from 8 and ends bit-identical to an uninterrupted run. metrics.jsonl on a
  full device -> one line, checkpoint 4 saved. A read-only workdir -> one line at start-up, nothing compiled. A
  full teacher/ and a full workdir (tiny tmpfs) -> one line, no traceback.
- `evaluate` on a finished run that is read-only: refused in one line into DIR/eval, evaluated with --results_dir; with only
  checkpoints/ read-only it writes DIR/eval as usual (it probes no write access it does not need).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from amd_jax import outputs
from amd_jax.errors import OutputError, WorkdirBusyError
import procs
from procs import Train
from test_checkpoint_faults import _assert_same_state, _raw_state

ARGS = ["--config.mesh.shape=(1,1)"]  # toy2d_tiny: checkpoints at 4, 8, 12; samples at 8; eval.json at the end


# ------------------------------------------------------------------------------------------- in-process
def test_io_failures_are_told_from_other_errors(tmp_path):
    assert outputs.io_cause(PermissionError(13, "denied", "/w/samples/a.png")) == ("Permission denied",
                                                                                    "/w/samples/a.png")
    wrapped = ValueError('RESOURCE_EXHAUSTED: Error writing local file "/w/teacher/params.tmp/manifest": Failed '
                         "to write 114 bytes to file 7: No space left on device [os_error_code=28]")
    assert outputs.io_cause(wrapped) == ("No space left on device", "/w/teacher/params.tmp/manifest")
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as e:
            raise RuntimeError("save failed") from e
    except RuntimeError as e:
        assert outputs.io_cause(e) == ("No space left on device", None)
    assert outputs.io_cause(ValueError("shapes differ")) is None
    assert outputs.io_cause(FileNotFoundError(2, "missing", "/data/x"), only_write_errors=True) is None

    with pytest.raises(OutputError, match=r"^Cannot write the samples into /w/samples: Permission denied \(a\.png\)$"):
        with outputs.writing("/w/samples", "the samples"):
            raise PermissionError(13, "denied", "/w/samples/a.png")
    with pytest.raises(OutputError, match=r"^Cannot write metrics.jsonl into /w: No space left on device$"):
        with outputs.writing("/w", "metrics.jsonl"):
            raise OSError(28, "No space left on device")
    with pytest.raises(ValueError, match="shapes"):  # not an I/O failure: unchanged
        with outputs.writing("/w", "x"):
            raise ValueError("shapes differ")
    with pytest.raises(WorkdirBusyError):  # the project's own errors pass, even raised while handling an OSError
        with outputs.writing("/w", "x"):
            try:
                raise FileExistsError(17, "exists", "/w/.lock")
            except FileExistsError:
                raise WorkdirBusyError("in use")


def test_probe_names_the_folder_that_refuses(tmp_path):
    outputs.probe({"a": tmp_path / "a", "b": tmp_path / "b" / "c"})
    assert (tmp_path / "b" / "c").is_dir() and not list((tmp_path / "a").iterdir())  # nothing left behind
    (tmp_path / "ro").mkdir()
    if subprocess.run(["chattr", "+i", str(tmp_path / "ro")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(OutputError, match=rf"Cannot write the samples into {tmp_path}/ro: Operation not "
                                              r"permitted .*Nothing was trained"):
            outputs.probe({"the samples": tmp_path / "ro"})
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "ro")], check=True)


# ------------------------------------------------------------------------------------------- end to end
def _chattr(flag, *paths):
    if subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (root ignores permission bits, so no read-only folder)")


def _one_line_error(out: str, prefix: str) -> str:
    """The run's error line; there is exactly one and no traceback."""
    lines = [line for line in out.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1 and "Traceback" not in out and "Exception ignored" not in out, out[-4000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted run (teacher included), the reference of the resumed ones."""
    wd = tmp_path_factory.mktemp("finished") / "run"
    with Train(wd, ARGS, tag="finished") as run:
        assert run.wait(timeout=300) == [0], run.out()[-3000:]
    return wd


def _with_teacher(finished, tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    shutil.copytree(finished / "teacher", wd / "teacher")
    return wd


def test_samples_folder_read_only_mid_run(finished, tmp_path):
    wd = _with_teacher(finished, tmp_path)
    (wd / "samples").mkdir()
    _chattr("+i", wd / "samples")
    _chattr("-i", wd / "samples")
    try:
        with Train(wd, ARGS, tag="ro") as run:
            run.wait_for(r"Compiled in", timeout=240)  # after the start-up probe, before step 8's samples
            _chattr("+i", wd / "samples")
            assert run.wait(timeout=120) == [1], run.out()[-3000:]
    finally:
        _chattr("-i", wd / "samples")
    line = _one_line_error(run.out(), "Write error:")
    assert re.match(rf"Write error: Cannot write the samples into {wd}/samples: Operation not permitted \(.*\)\. "
                    r"Saved checkpoint 8 first: .*training resumes from step 8\.$", line), line
    assert sorted(os.listdir(wd / "checkpoints")) == ["4", "8"] and not (wd / "eval.json").exists()
    with Train(wd, ARGS, tag="again") as run:  # fixed: resumes from 8 and ends as the uninterrupted run
        assert run.wait(timeout=240) == [0], run.out()[-3000:]
    assert "Resumed from step 8 " in run.out()
    _assert_same_state(_raw_state(wd, 12), _raw_state(finished, 12))
    assert json.loads((wd / "eval.json").read_text()) == json.loads((finished / "eval.json").read_text())


def test_metrics_on_a_full_device_saves_then_stops(finished, tmp_path):
    wd = _with_teacher(finished, tmp_path)
    os.symlink("/dev/full", wd / "metrics.jsonl")  # every write: ENOSPC
    with Train(wd, ARGS, tag="full") as run:
        assert run.wait(timeout=240) == [1], run.out()[-3000:]
    line = _one_line_error(run.out(), "Write error:")
    assert line.startswith(f"Write error: Cannot write metrics.jsonl into {wd}: No space left on device. Saved "
                           "checkpoint 4 first"), line
    assert os.listdir(wd / "checkpoints") == ["4"]


def test_read_only_workdir_fails_at_start(finished, tmp_path):
    wd = tmp_path / "run"
    shutil.copytree(finished, wd)
    shutil.rmtree(wd / "checkpoints" / "12")
    (wd / "eval.json").unlink()  # before: trained steps 9-12, then failed writing eval.json
    _chattr("+i", wd)
    try:
        t0 = time.time()
        with Train(wd, ARGS, tag="ro") as run:
            assert run.wait(timeout=120) == [1], run.out()[-3000:]
    finally:
        _chattr("-i", wd)
    line = _one_line_error(run.out(), "Write error:")
    assert line.startswith(f"Write error: Cannot write the workdir lock into {wd}: Operation not permitted"), line
    assert "Compiled in" not in run.out() and time.time() - t0 < 60


def _mount_tmpfs(folder, kib: int):
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN) to fill a folder")


@pytest.mark.parametrize("where", ["teacher", "workdir"])
def test_full_folder_is_one_line(tmp_path, where):
    """A tiny tmpfs as teacher/ (the teacher's save fails) or as the whole workdir (something fails first, a
    checkpoint or an output): one line naming the folder and 'No space left on device', exit 1, no traceback."""
    wd = tmp_path / "run"
    full = wd / "teacher" if where == "teacher" else wd
    _mount_tmpfs(full, 40 if where == "teacher" else 300)
    try:
        with Train(wd, ARGS, tag="full") as run:
            assert run.wait(timeout=240) == [1], run.out()[-3000:]
    finally:
        subprocess.run(["umount", str(full)], check=True)
    out = run.out()
    errors = [line for line in out.splitlines() if re.match(r"(Write|Checkpoint) error: ", line)]
    assert len(errors) == 1 and "Traceback" not in out, out[-4000:]
    assert "No space left on device" in errors[0] and str(full) in errors[0], errors[0]
    if where == "teacher":
        assert errors[0].startswith(f"Write error: Cannot write the teacher or a first-use cache into {full}: No "
                                    "space left on device"), errors[0]


def _evaluate(wd, *extra):
    cmd = [sys.executable, "-m", "amd_jax.evaluate", "--config=configs/toy2d_tiny.py", f"--workdir={wd}", *ARGS,
           *extra]
    return subprocess.run(cmd, cwd=procs.REPO, env=procs._env(1), capture_output=True, text=True, timeout=240)


def test_evaluate_a_read_only_finished_run(finished, tmp_path):
    wd = tmp_path / "run"
    shutil.copytree(finished, wd)
    _chattr("+i", *[p for p in wd.rglob("*") if p.is_dir()], wd)  # every folder of the run: nothing can be created
    try:
        done = _evaluate(wd)
        assert done.returncode == 1, done.stderr[-3000:]
        line = _one_line_error(done.stderr, "Write error:")
        assert line.startswith(f"Write error: Cannot write the evaluation into {wd}: Operation not permitted "
                               "(eval). Make it writable (or free space there), or give --results_dir=FOLDER."), line
        done = _evaluate(wd, f"--results_dir={tmp_path / 'elsewhere'}")
        assert done.returncode == 0, done.stderr[-3000:]
        got = json.loads((tmp_path / "elsewhere" / "eval_0000012.json").read_text())
        assert got["swd"] == json.loads((finished / "eval.json").read_text())["swd"]
        _chattr("-i", wd)  # only checkpoints/ (and below) stays read-only: DIR/eval is written as usual
        done = _evaluate(wd)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (wd / "eval" / "eval_0000012.json").exists()
    finally:
        _chattr("-i", *[p for p in wd.rglob("*") if p.is_dir()], wd)


def test_two_processes_stop_together(tmp_path):
    """Only process 0 writes and takes the lock; when it cannot, every process stops with the same line (none is left
    waiting in a collective): a workdir locked by another live run, then an unwritable samples/ at start-up."""
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / ".lock").write_text(json.dumps({"host": "elsewhere", "boot_id": "b", "pid": 1, "started": time.time(),
                                          "heartbeat": time.time(), "token": "t" * 32}))
    args = ["--config.mesh.shape=(2,1)"]
    with Train(wd, args, processes=2, tag="locked") as run:
        assert run.wait(timeout=120) == [1, 1], run.out(0)[-3000:] + run.out(1)[-3000:]
    for i in (0, 1):
        line = _one_line_error(run.out(i), "Workdir error:")
        assert f"{wd} is in use by another training run (host elsewhere, pid 1," in line, line
    assert "(on process 0)" in run.out(1)
    (wd / ".lock").unlink()
    (wd / "samples").mkdir()
    _chattr("+i", wd / "samples")
    try:
        with Train(wd, args, processes=2, tag="ro") as run:
            assert run.wait(timeout=180) == [1, 1], run.out(0)[-3000:] + run.out(1)[-3000:]
    finally:
        _chattr("-i", wd / "samples")
    for i in (0, 1):
        line = _one_line_error(run.out(i), "Write error:")
        assert f"Cannot write samples into {wd}/samples: Operation not permitted" in line, line
    assert "teacher step" not in run.out(0) and not (wd / ".lock").exists()
