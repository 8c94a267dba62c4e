"""Bad input gets a clear error naming the fix, before anything is compiled, and touches nothing saved."""

import hashlib
import os
import subprocess
import sys

import jax
import pytest

from amd_jax.errors import ConfigError
from amd_jax.parallel.mesh import resolve_mesh_shape
from amd_jax.trainer import Trainer
from tiny import ROOT, tiny_toy2d_config


def _tree_digest(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            p = os.path.join(root, f)
            h.update(p.encode())
            h.update(open(p, "rb").read())
            h.update(str(os.stat(p).st_mtime_ns).encode())
    return h.hexdigest()


def test_unknown_config_key_is_refused_by_the_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "amd_jax.train", "--config=configs/toy2d_tiny.py", f"--workdir={tmp_path}",
         "--config.amd.strenght=0.3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode != 0
    assert "strenght" in proc.stderr and "amd" in proc.stderr
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_mesh_that_does_not_match_the_devices():
    with pytest.raises(ConfigError, match=r"needs 6 devices but 8 are present.*--config.mesh.shape"):
        resolve_mesh_shape(("data", "fsdp"), (3, 2), 8)
    with pytest.raises(ConfigError, match="cannot fill 8 devices"):
        resolve_mesh_shape(("data", "fsdp"), (-1, 3), 8)
    assert resolve_mesh_shape(("data", "fsdp"), (-1, 2), 8) == (4, 2)
    config = tiny_toy2d_config()
    config.mesh.shape = (3, 2)
    with pytest.raises(ConfigError, match="mesh.shape"):
        Trainer(config, "/nonexistent/never/created")


def test_global_batch_not_divisible_by_the_data_axes(tmp_path):
    config = tiny_toy2d_config()
    config.mesh.shape = (4, 2)
    config.global_batch = 36
    with pytest.raises(ConfigError, match=r"global_batch=36 is not divisible by .* data\*fsdp=8.*multiple of 8"):
        Trainer(config, str(tmp_path))
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "key,value,match",
    [("method", "dmd3", "--config.method=dmd2"), ("amd.rls_mode", "sharp", "rls_mode"),
     ("amd.group_size", 5, "group_size=5 does not divide"), ("dmd.ttur", 0, "ttur"),
     ("eval.num_samples", 4, "raise eval.num_samples"), ("log.sample_count", 4, "log.sample_every=0")],
)
def test_invalid_knobs(key, value, match, tmp_path):
    config = tiny_toy2d_config(**{key: value})
    with pytest.raises(ConfigError, match=match):
        Trainer(config, str(tmp_path))


def test_workdir_with_a_checkpoint_of_an_incompatible_config(tmp_path):
    config = tiny_toy2d_config()
    config.total_steps, config.checkpoint.every, config.eval.at_end, config.log.sample_every = 2, 2, False, 0
    Trainer(config, str(tmp_path), devices=jax.devices()[:1]).run()
    before = _tree_digest(tmp_path / "checkpoints")
    wider = config.copy_and_resolve_references()
    wider.model.hidden = 48
    with pytest.raises(ConfigError, match=r"(?s)incompatible config .*Dense_0/kernel: checkpoint \(\(32, 32\).*model.hidden: 32 -> 48.*Use a new --workdir"):
        Trainer(wider, str(tmp_path), devices=jax.devices()[:1])
    assert _tree_digest(tmp_path / "checkpoints") == before
