"""Dry runs of the three launchers for a v5p-64 slice (8 hosts x 4 chips, topology 2x4x4)."""

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")
OVERRIDES = ["--config.total_steps=2000", "--config.teacher.dir=gs://my-bucket/cat's teacher"]
COMMON = ["--slice", "v5p-64", "--config", "configs/toy2d.py", "--workdir", "gs://my-bucket/amd/run1"]
IMAGE = "us-docker.pkg.dev/my-proj/amd/amd-jax:latest"
TRAIN = ["-m", "amd_jax.train", "--config=configs/toy2d.py", "--workdir=gs://my-bucket/amd/run1", *OVERRIDES]


def _run(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, cwd=REPO)


def test_tpu_vm_dry_run_exact_commands():
    r = _run("bash", f"{LAUNCH}/tpu_vm.sh", "--dry-run", "--name", "amd-v5p", "--zone", "us-east5-a",
             "--project", "my-proj", *COMMON, *OVERRIDES)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    tpu, loc = "gcloud compute tpus tpu-vm", "--zone us-east5-a --project my-proj"
    assert lines[:4] == [
        f"{tpu} describe amd-v5p {loc}",
        f"{tpu} create amd-v5p {loc} --accelerator-type v5p-64 --version v2-alpha-tpuv5",
        f"tar -C {REPO} -czf /tmp/amd_jax-amd-v5p.tgz --exclude=__pycache__ amd_jax configs launch "
        "requirements.txt pyproject.toml",
        f"{tpu} scp /tmp/amd_jax-amd-v5p.tgz amd-v5p:/tmp/amd_jax.tgz {loc} --worker=all"]
    assert lines[6] == f"{tpu} ssh amd-v5p {loc} --worker=0 --command 'tail -n +1 -F ~/amd_jax_run.log'"
    assert len(lines) == 7
    install, start = (shlex.split(l) for l in lines[4:6])
    prefix = shlex.split(f"{tpu} ssh amd-v5p {loc} --worker=all --command")
    assert install[:-1] == start[:-1] == prefix
    assert "grep -v '^jaxlib'" in install[-1] and "'jax[tpu]==0.10.2' -f https://storage.googleapis.com/" \
        "jax-releases/libtpu_releases.html" in install[-1] and "-p 3.11" in install[-1]
    # the remote shell sees exactly the local arguments, quote in the override included
    run_cmd = shlex.split(start[-1].split("nohup ", 1)[1].split(" > ")[0])
    assert run_cmd == ["~/amd_venv/bin/python", *TRAIN]


@pytest.mark.parametrize("args,message", [
    (["--slice", "v9-8"], "unknown TPU slice type 'v9-8'"),
    (["--workdir", "/tmp/x"], "--workdir must be a gs:// path"),
    (["--config", "configs/nope.py"], "configs/nope.py not found"),
    (["--bogus"], "unknown argument '--bogus'"),
])
def test_tpu_vm_clear_errors_before_any_command(args, message):
    r = _run("bash", f"{LAUNCH}/tpu_vm.sh", "--dry-run", "--name", "n", "--zone", "z", *COMMON, *args)
    assert r.returncode == 2 and message in r.stderr and "gcloud" not in r.stdout, (r.stdout, r.stderr)


def test_tpu_vm_delete():
    r = _run("bash", f"{LAUNCH}/tpu_vm.sh", "--dry-run", "--name", "amd-v5p", "--zone", "us-east5-a", "--delete")
    assert r.stdout == "gcloud compute tpus tpu-vm delete amd-v5p --zone us-east5-a --quiet\n", r.stderr


def test_gke_jobset_manifest():
    r = _run(sys.executable, f"{LAUNCH}/gke_jobset.py", "--dry_run", "--image", IMAGE, "--name", "amd-v5p",
             *COMMON, "--", *OVERRIDES)
    assert r.returncode == 0, r.stderr
    alias = _run(sys.executable, f"{LAUNCH}/gke_jobset.py", "--dry-run", f"--image={IMAGE}", "--name=amd-v5p",
                 *COMMON, "--", *OVERRIDES)
    assert alias.stdout == r.stdout, alias.stderr  # tpu_vm.sh's spelling --dry-run is an alias
    m = yaml.safe_load(r.stdout)
    assert (m["apiVersion"], m["kind"], m["metadata"]["name"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet", "amd-v5p")
    [rj] = m["spec"]["replicatedJobs"]
    job = rj["template"]["spec"]
    assert (rj["replicas"], job["parallelism"], job["completions"], job["completionMode"]) == (1, 8, 8, "Indexed")
    pod = job["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice",
                                   "cloud.google.com/gke-tpu-topology": "2x4x4"}
    [c] = pod["containers"]
    assert c["image"] == IMAGE
    assert c["resources"]["limits"] == c["resources"]["requests"] == {"google.com/tpu": 4}
    assert c["command"] == ["python", *TRAIN]


def test_xm_dry_run_spec_without_xmanager():
    r = _run(sys.executable, f"{LAUNCH}/xm_launch.py", "--dry_run", f"--image={IMAGE}", "--slice=v5p-64",
             "--config=configs/toy2d.py", "--workdir=gs://my-bucket/amd/run1", "--", *OVERRIDES)
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)
    assert spec["tpu"] == {"slice": "v5p-64", "gke_accelerator": "tpu-v5p-slice", "topology": "2x4x4", "hosts": 8,
                           "chips_per_host": 4, "chips": 32}
    assert spec["entrypoint"] + spec["args"] == ["python", *TRAIN]
    assert spec["executable"]["push_image_tag"] == IMAGE and spec["executable"]["dockerfile"] == "launch/Dockerfile"
    assert "xmanager" not in sys.modules


@pytest.mark.parametrize("launcher", ["gke_jobset.py", "xm_launch.py"])
def test_python_launchers_unknown_slice(launcher):
    r = _run(sys.executable, f"{LAUNCH}/{launcher}", "--dry_run", f"--image={IMAGE}", "--slice=v9-8",
             "--config=configs/toy2d.py", "--workdir=gs://b/d")
    assert r.returncode != 0 and "unknown TPU slice type 'v9-8'" in r.stderr and "v5p-64" in r.stderr, r.stderr


@pytest.mark.parametrize("launcher", ["gke_jobset.py", "xm_launch.py"])
def test_python_launchers_refuse_missing_flags_and_bare_overrides(launcher):
    """Both are absl programs: a missing required flag is named; an override before `--` is an unknown flag."""
    r = _run(sys.executable, f"{LAUNCH}/{launcher}", "--dry_run", f"--image={IMAGE}", "--config=configs/toy2d.py",
             "--workdir=gs://b/d")
    assert r.returncode != 0 and "--slice" in r.stderr and r.stdout == "", r.stderr
    r = _run(sys.executable, f"{LAUNCH}/{launcher}", "--dry_run", *COMMON, f"--image={IMAGE}", OVERRIDES[0])
    assert r.returncode != 0 and "Unknown command line flag 'config.total_steps'" in r.stderr, r.stderr
