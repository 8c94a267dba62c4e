"""compare_runs: two runs of one config are identical; another seed differs, and the command says so."""

import subprocess
import sys

from amd_jax.tools.compare_runs import compare
from amd_jax.loop import train
from amd_jax.session import Session
from procs import REPO, _env
from tiny import tiny_toy2d_config


def test_same_config_identical_other_seed_differs(tmp_path):
    config = tiny_toy2d_config(**{"total_steps": 8, "checkpoint.every": 4, "log.sample_every": 0})
    config.teacher.dir = str(tmp_path / "teacher")  # one teacher for the three runs
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        config.seed = seed
        train(Session(config, str(tmp_path / name)))
    same = compare(tmp_path / "a", tmp_path / "b")
    assert [what.split(" (")[0] for what, _ in same] == ["eval.json", "checkpoint 4", "checkpoint 8"]
    assert all(ok for _, ok in same)
    other = dict(compare(tmp_path / "a", tmp_path / "c"))
    assert not other["eval.json"] and not any(ok for what, ok in other.items() if what.startswith("checkpoint"))
    out = subprocess.run([sys.executable, "-m", "amd_jax.tools.compare_runs", f"--a={tmp_path / 'a'}",
                          f"--b={tmp_path / 'c'}"], cwd=REPO, env=_env(1), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "the runs differ" in out.stdout
