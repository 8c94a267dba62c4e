"""The README's two commands, as written, so the README cannot drift from what works.

The main job: the first fenced command of README.md runs in a fresh copy of the repository (the files git tracks),
from its root, with the README's relative --workdir. Only two things change, both to make it short: the venv
creation and `pip install` steps are checked for their shape and replaced by this test's interpreter (already
installed), and step-count overrides are appended. It must write the files the README promises.
The test command: the second fenced command, and `.ci/run` runs exactly its pytest line after installing the
same requirements.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from procs import REPO, _env

SHORT = ["--config.total_steps=20", "--config.teacher.steps=100", "--config.eval.classifier_steps=50",
         "--config.checkpoint.every=10", "--config.log.every=10", "--config.log.sample_every=10",
         "--config.log.sample_count=64", "--config.eval.teacher_num_samples=64", "--config.eval.num_samples=128"]


def _fenced_commands() -> list[str]:
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def _parts(command: str) -> list[list[str]]:
    return [shlex.split(p) for p in command.split("&&")]


def test_readme_main_command_runs_as_written(tmp_path):
    venv, install, job = _parts(_fenced_commands()[0])
    assert venv[:3] == ["python3.11", "-m", "venv"] and venv[3] == ".venv"
    assert install[:2] == [".venv/bin/pip", "install"] and "requirements.txt" in install and "-e" in install
    assert job[:3] == [".venv/bin/python", "-m", "amd_jax.train"]
    workdir = next(a.split("=", 1)[1] for a in job if a.startswith("--workdir="))
    assert not os.path.isabs(workdir)  # the README's user types a relative path: that is what must work

    clone = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        source = os.path.join(REPO, name)
        if os.path.islink(source):  # a tracked symlink (tests/fixtures/wan_task_tiny/*) stays a link, as git clones it
            os.symlink(os.readlink(source), clone / name)
        else:
            (clone / name).write_bytes(open(source, "rb").read())
    env = _env(1)
    env["PYTHONPATH"] = str(clone)  # the copy's package, not the checkout's
    out = subprocess.run([sys.executable, *job[1:], *SHORT], cwd=clone, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    run = clone / workdir
    metrics = json.loads((run / "eval.json").read_text())
    for key in ("class_accuracy", "fid", "precision", "recall", "diversity", "reward_mean", "zone_fraction"):
        assert key in metrics, key
    assert metrics["step"] == 20
    assert (run / "samples" / "samples_final.png").stat().st_size > 500
    assert list((run / "tensorboard").glob("events.out.tfevents.*")) and (run / "metrics.jsonl").stat().st_size
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20]
    assert not list((run / "checkpoints").glob("*tmp*"))  # every save finished
    assert (run / "teacher" / "eval.json").exists() and (run / "teacher" / "samples.png").exists()


def test_readme_test_command_is_what_ci_runs():
    install, tests = _parts(_fenced_commands()[1])
    assert install == [".venv/bin/pip", "install", "-r", "requirements-test.txt"]
    assert tests[:3] == [".venv/bin/python", "-m", "pytest"]
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert " ".join(tests) in ci, "the README's test command must be .ci/run's last step"
    assert ci[-1] == " ".join(tests)
    assert any(line.startswith(".venv/bin/pip install") and "requirements-test.txt" in line for line in ci)


@pytest.mark.parametrize("bad", ["--workdir=", "--workdir= "])
def test_empty_workdir_is_refused(bad):
    out = subprocess.run([sys.executable, "-m", "amd_jax.train", "--config=configs/toy2d_tiny.py", bad], cwd=REPO,
                         env=_env(1), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "--workdir is empty" in out.stderr
    assert "Traceback" not in out.stderr
