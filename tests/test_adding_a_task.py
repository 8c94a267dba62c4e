"""docs/ADDING_A_TASK.md is followed as written: its three code blocks (the task module, the registry line, the
config) are written to a temporary folder, the task is registered under the module path the page gives, and it
trains end to end through the Session and the loop (teacher on first use, checkpoints, eval.json, a resume that
finds the run finished); its `check` refuses a bad knob in one line through amd_jax.config.validate."""

from __future__ import annotations

import ast
import json
import os
import re

import jax
import numpy as np
import pytest

from amd_jax import tasks
from amd_jax.config import load, validate
from amd_jax.errors import ConfigError
from amd_jax.loop import train
from amd_jax.session import Session

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "ADDING_A_TASK.md")


def _blocks() -> dict[str, str]:
    """{path named on the block's first line: code} of the page's python blocks."""
    text = open(DOC).read()
    out = {}
    for code in re.findall(r"```python\n(.*?)```", text, re.S):
        first, _, rest = code.partition("\n")
        out[first.lstrip("# ").split(",")[0].strip()] = code
    return out


@pytest.fixture()
def doc_task(tmp_path, monkeypatch):
    """The page's task written to tmp_path, registered as the page says; returns the config file's path."""
    blocks = _blocks()
    assert set(blocks) == {"amd_jax/tasks/gauss2d/__init__.py", "amd_jax/tasks/__init__.py", "configs/gauss2d.py"}
    registry = ast.literal_eval("{" + blocks["amd_jax/tasks/__init__.py"].partition("\n")[2].strip() + "}")
    assert registry == {"gauss2d": "amd_jax.tasks.gauss2d"}  # the module the first block's path names
    package = tmp_path / "doc_tasks" / "gauss2d"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(blocks["amd_jax/tasks/gauss2d/__init__.py"])
    monkeypatch.syspath_prepend(str(tmp_path / "doc_tasks"))
    monkeypatch.setitem(tasks._TASKS, "gauss2d", "gauss2d")
    config_file = tmp_path / "gauss2d.py"
    config_file.write_text(blocks["configs/gauss2d.py"])
    return str(config_file)


def test_the_pages_task_trains_end_to_end(doc_task, tmp_path):
    config = load(doc_task)
    workdir = tmp_path / "run"
    state = train(Session(config, str(workdir)))
    assert int(jax.device_get(state.step)) == config.total_steps
    result = json.loads((workdir / "eval.json").read_text())
    assert np.isfinite(result["mean_distance"]) and result["step"] == config.total_steps
    report = json.loads((workdir / "teacher" / "eval.json").read_text())
    # the teacher trained on first use and reported by DDIM-50: its samples lie near their class's centre
    # (std 0.2, centres 2 * 2 sin(pi / 3) = 3.46 apart), not at an untrained network's output
    assert report["sampler"] == "ddim50" and report["mean_distance"] < 1.0, report
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["4", "8"]
    again = Session(load(doc_task), str(workdir))  # resumes at the last step: nothing left to train
    assert again.resume_step == config.total_steps


def test_the_pages_data_and_check(doc_task):
    config = load(doc_task)
    task = tasks.build(config)
    batch = task.data.global_batch(3, 4096)
    means = task.data.means()
    for c in range(config.data.num_classes):  # each class's samples: mean at its centre, std data.std
        x = batch["real"][batch["cond"]["label"] == c]
        np.testing.assert_allclose(x.mean(0), means[c], atol=0.03)
        np.testing.assert_allclose(x.std(0), config.data.std, rtol=0.1)
    # a pure function of (seed, step): the same batch again, another one at the next step
    np.testing.assert_array_equal(task.data.global_batch(3, 4096)["real"], batch["real"])
    assert not np.allclose(task.data.global_batch(4, 4096)["real"], batch["real"])
    with pytest.raises(ConfigError, match=r"data.std=0.0: the Gaussians' std must be > 0"):
        validate(load(doc_task, {"data.std": 0.0}), num_devices=1)
