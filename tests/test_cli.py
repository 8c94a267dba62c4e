"""What the entry points do with what a user types: paths made absolute once, bad flags in one line."""

import os
import subprocess
import sys

import ml_collections
import pytest

from amd_jax import cli, paths
from amd_jax.errors import ConfigError
from procs import REPO, _env


def test_absolute_resolves_local_paths_and_keeps_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.absolute("workdirs/a") == str(tmp_path / "workdirs" / "a")
    assert paths.absolute("./a/../b") == str(tmp_path / "b")
    assert paths.absolute("~/x") == str(tmp_path / "home" / "x")
    for kept in ("gs://bucket/run", "s3://b/k", "tfds:coco_captions", "", "/abs/path"):
        assert paths.absolute(kept) == kept


def test_workdir_refuses_empty():
    for bad in (None, "", "   "):
        with pytest.raises(ConfigError, match="--workdir is empty"):
            paths.workdir(bad)


def test_config_paths_resolved_in_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = ml_collections.ConfigDict({
        "teacher": {"dir": "t", "steps": 3},
        "data": {"path": "tfds:mnist", "real": "r.npz", "name": "digits"},
        "eval": {"scorers": {"hpsv2": "gs://b/h", "pickscore": "p"}, "dir": ""},
    })
    c.lock()
    changed = paths.resolve_config_paths(c)
    assert sorted(changed) == ["data.real", "eval.scorers.pickscore", "teacher.dir"]
    assert c.teacher.dir == str(tmp_path / "t") and c.eval.scorers.pickscore == str(tmp_path / "p")
    assert c.data.path == "tfds:mnist" and c.data.name == "digits" and c.eval.dir == "" and c.teacher.steps == 3


def test_unknown_config_keys_named_with_nearest():
    argv = ["prog", "--config=configs/toy2d_tiny.py", "--config.amd.ss=1", "--config.optim.lrr=2", "--config.seed=3"]
    msg = cli.unknown_config_keys([a.replace("configs/", os.path.join(REPO, "configs") + "/") for a in argv])
    assert "'amd.ss'" in msg and "did you mean amd.s?" in msg
    assert "'optim.lrr'" in msg and "optim.student_lr" in msg  # no close name: the block's keys are listed
    assert "'seed'" not in msg  # a valid key is not reported
    assert cli.unknown_config_keys(["prog", "--config=" + os.path.join(REPO, "configs/toy2d_tiny.py"),
                                    "--config.amd.s=1", "--config.student.timesteps=(1.0,)"]) == ""


def test_bad_flag_is_one_line_without_traceback():
    for bad, expected in (("--config.amd.ss=1", "did you mean amd.s?"),
                          ("--config.total_steps=abc", "invalid literal")):
        out = subprocess.run([sys.executable, "-m", "amd_jax.train", "--config=configs/toy2d_tiny.py",
                              "--workdir=/tmp/unused", bad], cwd=REPO, env=_env(1), capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Flag error:") and expected in lines[0]


def test_relative_and_home_workdirs_in_train_evaluate_and_sweep(tmp_path):
    """Orbax refuses relative paths: each entry point must resolve './run', 'run' and '~/run' itself."""
    env = {**_env(1), "HOME": str(tmp_path)}
    config = os.path.join(REPO, "configs", "toy2d_tiny.py")
    short = ["--config.total_steps=4", "--config.checkpoint.every=4", "--config.log.sample_every=0"]

    def run(module, *args):
        out = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    run("amd_jax.train", f"--config={config}", "--workdir=./run", *short)
    assert (tmp_path / "run" / "eval.json").exists() and (tmp_path / "run" / "checkpoints" / "4").is_dir()
    run("amd_jax.evaluate", f"--config={config}", "--workdir=~/run", *short)
    assert (tmp_path / "run" / "eval" / "eval_0000004.json").exists()
    run("amd_jax.sweep", "--config=" + os.path.relpath(config, tmp_path), "--workdir=sweep", "--seeds=0",
        "--variant=dmd2:method=dmd2", *[f"--set={a[len('--config.'):]}" for a in short])
    assert (tmp_path / "sweep" / "dmd2" / "seed_0" / "eval.json").exists() and (tmp_path / "sweep" / "results.md").exists()


_USE_TF_PROBE = """
import importlib.abc, os, runpy, sys
seen = []
class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "transformers" and not seen:
            seen.append(os.environ.get("USE_TF"))
sys.meta_path.insert(0, Probe())
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("USE_TF", os.environ.get("USE_TF"), "transformers", seen)
"""


@pytest.mark.parametrize("module", ["amd_jax.train", "amd_jax.evaluate", "amd_jax.tools.prepare_sdxl", "amd_jax.tools.bench_steps",
                                    "amd_jax.tools.convert_openclip", "amd_jax.tools.bench_rewards"])
def test_entry_points_set_use_tf_before_transformers(module):
    """USE_TF=0 is the entry points' job (no library module sets it): each program that can import transformers
    sets it before its first import, so transformers never sees it unset, even where TensorFlow is installed."""
    env = {k: v for k, v in _env(1).items() if k != "USE_TF"}
    out = subprocess.run([sys.executable, "-c", _USE_TF_PROBE, module], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    last = out.stdout.strip().splitlines()[-1]
    assert last in ("USE_TF 0 transformers []", "USE_TF 0 transformers ['0']"), out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.parametrize("args,expected", [
    (["amd_jax.tools.convert_inception", "--src=w.pth"], "Flag --out must have a value other than None"),
    (["amd_jax.tools.convert_openclip", "--out=d", "--arch=ViT-H-14"],
     "Flag --src must have a value other than None"),
    (["amd_jax.tools.convert_openclip", "--src=a.pt", "--out=d", "--arch=ViT-B-32"],
     "--arch=ViT-B-32: value should be one of <ViT-H-14|ViT-g-14>"),
    (["amd_jax.tools.bench_inception", "--batch=many"], "--batch=many: invalid literal for int()"),
    (["amd_jax.tools.bench_rewards", "--arch=nope"], "value should be one of <ViT-H-14|ViT-g-14|clip_l14>"),
])
def test_tools_refuse_bad_flags_in_one_line(args, expected):
    """The converters and benchmarks are absl programs run by amd_jax.cli.run, like train: a missing or bad flag is
    one line naming it, before any work (the converters' old positional arguments are now --src / --out)."""
    out = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=_env(1), capture_output=True, text=True,
                         timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("Flag error:"), out.stderr
    assert expected in lines[0], lines[0]


def test_fetch_mnist_refuses_the_old_positional_cache_dir(tmp_path):
    out = subprocess.run([sys.executable, "-m", "amd_jax.tools.fetch_mnist", str(tmp_path)], cwd=REPO, env=_env(1),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "give the cache folder as --cache_dir=DIR" in out.stderr, out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing fetched


def test_console_scripts_name_existing_entry_points():
    """Every [project.scripts] entry names a function of amd_jax.tools.scripts that runs an existing module as
    __main__; one is run for real (amd-compare-runs refuses two empty folders with exit 1 and its message)."""
    import importlib.util
    import tomllib

    from amd_jax.tools import scripts

    table = tomllib.load(open(os.path.join(REPO, "pyproject.toml"), "rb"))["project"]["scripts"]
    assert {"amd-train", "amd-evaluate", "amd-sweep", "amd-plan"} <= set(table)
    source = open(scripts.__file__).read()
    for name, target in table.items():
        module, func = target.split(":")
        assert module == "amd_jax.tools.scripts" and callable(getattr(scripts, func)), name
        run = source.split(f"\n{func} = _run(", 1)[1].split(")", 1)[0].strip('"')
        assert importlib.util.find_spec(run) is not None, (name, run)
    code = ("import sys; from amd_jax.tools import scripts; sys.argv = ['amd-compare-runs', '--a=A', '--b=B']; "
            "scripts.compare_runs()")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(1), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "Nothing to compare" in out.stderr, (out.returncode, out.stderr)


def test_print_config_lists_every_key_and_touches_nothing(tmp_path):
    """--print_config: every key of the resolved config (overrides applied, local paths absolute), as
    --config.KEY=VALUE takes it, rc 0, no --workdir needed and nothing written."""
    from amd_jax.config import load

    out = subprocess.run([sys.executable, "-m", "amd_jax.train", f"--config={os.path.join(REPO, 'configs', 'toy2d_tiny.py')}",
                          "--print_config", "--config.amd.s=0.3", "--config.teacher.dir=rel/teacher"],
                         cwd=tmp_path, env=_env(1), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    header, *lines = out.stdout.splitlines()
    printed = dict(line.split("=", 1) for line in lines)
    expected = load(os.path.join(REPO, "configs", "toy2d_tiny.py"))

    def flat(d, prefix=""):  # the dotted leaves of the plain dict; an empty block (evals = {}) is a leaf too
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]

    leaves = set(flat(expected.to_dict()))
    assert set(printed) == leaves and header == f"# {len(leaves)} config keys; override any with --config.KEY=VALUE"
    assert printed["amd.s"] == "0.3" and printed["total_steps"] == "12" and printed["experiment"] == "toy2d"
    assert printed["teacher.dir"] == str(tmp_path / "rel" / "teacher") and printed["evals"] == "{}"
    assert printed["student.timesteps"] == "(1.0,)"  # what --config.student.timesteps=(1.0,) takes back
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", ["amd_jax.evaluate", "amd_jax.sweep"])
def test_help_keeps_the_usage_line_continuation(module):
    """The usage in the module docstring (what --help prints) keeps its backslash and line break (a non-raw
    docstring joined the two lines)."""
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, env=_env(1), capture_output=True,
                         text=True, timeout=120)  # absl's --help exits with 1
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    usage = [line for line in out.stdout.splitlines() if line.strip().startswith(f"python -m {module}")][0]
    assert usage.endswith(" \\") and usage.count("--") <= 7, usage


def test_pyproject_dependencies_admit_the_pins_of_requirements():
    """pyproject's ranges and requirements.txt's exact pins name the same packages, each pin inside its range; the
    extras pin what requirements-test.txt / requirements-tpu.txt pin."""
    import tomllib

    from packaging.requirements import Requirement

    def pins(name):
        lines = [line.split("#")[0].strip() for line in open(os.path.join(REPO, name))]
        return {r.name: r for r in map(Requirement, (x for x in lines if x and not x.startswith("-r")))}

    project = tomllib.load(open(os.path.join(REPO, "pyproject.toml"), "rb"))["project"]
    ranges = {r.name: r for r in map(Requirement, project["dependencies"])}
    exact = pins("requirements.txt")
    assert set(ranges) == set(exact)
    for name, pin in exact.items():
        version = str(pin.specifier).removeprefix("==")
        assert ranges[name].specifier.contains(version), (name, version, str(ranges[name].specifier))
    extras = project["optional-dependencies"]
    assert {str(r) for r in pins("requirements-test.txt").values()} == set(extras["test"])
    assert {str(r) for r in pins("requirements-tpu.txt").values()} == set(extras["tpu"])
