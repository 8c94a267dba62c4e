"""Dry runs of the three launchers for a v5p-64 slice (8 hosts x 4 chips, topology 2x4x4); their --help; the local
config check every launcher runs before shipping (launch/preflight.py) and its one-line errors."""

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


# --------------------------------------------------------------------------- --help and the local config check
def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("cmd", [
    ["bash", f"{LAUNCH}/tpu_vm.sh", "--help"], ["bash", f"{LAUNCH}/tpu_vm.sh", "-h"],
    [sys.executable, f"{LAUNCH}/gke_jobset.py", "--help"], [sys.executable, f"{LAUNCH}/xm_launch.py", "--help"],
    [sys.executable, f"{LAUNCH}/preflight.py", "--help"], [sys.executable, f"{LAUNCH}/slices.py", "--help"],
], ids=["tpu_vm", "tpu_vm-h", "gke_jobset", "xm_launch", "preflight", "slices"])
def test_every_launcher_has_help(cmd):
    r = _run(*cmd)
    assert r.returncode == 0 and r.stderr == "" and ("--slice" in r.stdout or "SLICE" in r.stdout), (r.stdout, r.stderr)
    if "slices.py" not in cmd[1]:
        assert "validate" in r.stdout and "gs://" in r.stdout  # each says what it checks before shipping


def test_tpu_vm_refuses_sdxl_without_its_inputs_before_any_command():
    """configs/sdxl.py has no model, reward or data path: the local check refuses it in one line, exit 2, before
    anything is printed or run (a dry run too); --no-check ships it anyway."""
    args = ["bash", f"{LAUNCH}/tpu_vm.sh", "--dry-run", "--name", "n", "--zone", "z", "--slice", "v5p-64",
            "--config", "configs/sdxl.py", "--workdir", "gs://b/d"]
    r = _run(*args)
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
    assert _lines(r.stderr) == [
        "tpu_vm.sh: error: model.path is empty: set --config.model.path to the diffusers SDXL folder (local or "
        "gs://). (--no-check skips this check)"], r.stderr
    r = _run(*args, "--no-check")
    assert r.returncode == 0 and r.stdout.startswith("gcloud compute tpus tpu-vm describe n"), r.stderr


def test_tpu_vm_check_uses_the_slice_and_the_overrides():
    """The check sees the overrides and the slice's 32 devices: sdxl_tiny's mesh 4 x 2 cannot fill them; a good
    run reports what it validated and which paths it could not check (gs://) on stderr, stdout unchanged."""
    base = ["bash", f"{LAUNCH}/tpu_vm.sh", "--dry-run", "--name", "n", "--zone", "z", "--slice", "v5p-64",
            "--workdir", "gs://b/d"]
    r = _run(*base, "--config", "configs/sdxl_tiny.py")
    assert r.returncode == 2 and r.stdout == "" and len(_lines(r.stderr)) == 1, r.stderr
    assert "mesh.shape {'data': 4, 'fsdp': 2} needs 8 devices but 32" in r.stderr
    r = _run(*base, "--config", "configs/toy2d.py", "--config.total_step=5")
    assert r.returncode == 2 and _lines(r.stderr) == [
        "tpu_vm.sh: error: unknown config key 'total_step' in " + os.path.join(REPO, "configs", "toy2d.py")
        + "; did you mean total_steps? (--no-check skips this check)"], r.stderr
    r = _run(*base, "--config", "configs/toy2d.py", *OVERRIDES)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 7, r.stderr
    assert "tpu_vm.sh: configs/toy2d.py validated for v5p-64 (32 devices, 8 hosts)" in r.stderr
    assert "not checked for existence here (URLs): teacher.dir=gs://my-bucket/cat's teacher" in r.stderr


@pytest.mark.parametrize("launcher", ["gke_jobset.py", "xm_launch.py"])
def test_python_launchers_errors_are_one_line(launcher):
    """A bad --workdir, a missing flag, an override before `--` and a config the slice's run would refuse: one line
    on stderr each (no help text), exit code 2, nothing on stdout."""
    cmd = [sys.executable, f"{LAUNCH}/{launcher}", "--dry_run", f"--image={IMAGE}"]
    cases = [
        (["--slice=v5p-64", "--config=configs/toy2d.py", "--workdir=/tmp/x"],
         f"{launcher}: error: --workdir must be a gs:// path that every host can reach, got '/tmp/x'"),
        (["--config=configs/toy2d.py", "--workdir=gs://b/d"],
         f"{launcher}: error: flag --slice=None: Flag --slice must have a value other than None."),
        (["--slice=v5p-64", "--config=configs/toy2d.py", "--workdir=gs://b/d", "--config.total_steps=3"],
         f"{launcher}: error: Unknown command line flag 'config.total_steps' (--config.key=value overrides go after "
         "`--`: ... -- --config.total_steps=2000)"),
        (["--slice=v5p-64", "--config=configs/sdxl.py", "--workdir=gs://b/d"],
         f"{launcher}: error: model.path is empty: set --config.model.path to the diffusers SDXL folder (local or "
         "gs://). (--no_check skips this check)"),
    ]
    for args, line in cases:
        r = _run(*cmd, *args)
        assert (r.returncode, r.stdout, _lines(r.stderr)) == (2, "", [line]), (args, r.stdout, r.stderr)
    r = _run(*cmd, "--slice=v5p-64", "--config=configs/sdxl.py", "--workdir=gs://b/d", "--no-check")
    assert r.returncode == 0 and r.stdout, r.stderr  # the check skipped: the manifest / spec is printed


@pytest.fixture
def preflight(monkeypatch):
    for key, value in (("JAX_PLATFORMS", "cpu"), ("DIFFUSERS_VERBOSITY", "error"), ("USE_TF", "0")):
        monkeypatch.setenv(key, os.environ.get(key, value))  # what check() sets, restored after the test
    monkeypatch.syspath_prepend(LAUNCH)
    import preflight as module

    return module


def test_preflight_sdxl_with_gs_inputs_validates_and_lists_what_it_did_not_check(preflight):
    """configs/sdxl.py with its three inputs on gs:// (not checked for existence here) and the flash kernel (a TPU
    kernel: the hosts are TPU VMs, this CPU host is not refused) validates for v5p-64's 32 devices."""
    gs = ["--config.model.path=gs://b/sdxl", "--config.reward.path=gs://b/hpsv2", "--config.data.path=gs://b/c.txt",
          "--config.data.real=gs://b/real.npz"]  # configs/sdxl.py has the GAN on: it reads real latents
    notes = preflight.check("configs/sdxl.py", "v5p-64", [*gs, "--config.model.unet_attention=flash"])
    assert notes[0] == "configs/sdxl.py validated for v5p-64 (32 devices, 8 hosts)"
    assert notes[1] == ("not checked for existence here (URLs): data.path=gs://b/c.txt, data.real=gs://b/real.npz, "
                        "model.path=gs://b/sdxl, reward.path=gs://b/hpsv2")
    assert len(notes) == 2
    with pytest.raises(preflight.PreflightError, match=r"global_batch=120 is not divisible .* data\*fsdp=256"):
        preflight.check("configs/sdxl.py", "v5litepod-256", [*gs, "--config.global_batch=120"])  # 256 devices


def test_preflight_local_inputs_are_checked_here_and_flagged_when_not_shipped(preflight, tmp_path):
    """A local input that does not exist is refused (task check); one that exists outside amd_jax/ and configs/ is
    validated but listed: the hosts must have it too."""
    gs = ["--config.model.path=gs://b/sdxl", "--config.reward.path=gs://b/hpsv2", "--config.data.real=gs://b/r.npz"]
    with pytest.raises(preflight.PreflightError, match=r"data.path=.*missing.txt.*(does not exist|no such file)"):
        preflight.check("configs/sdxl.py", "v5p-64", [*gs, f"--config.data.path={tmp_path}/missing.txt"])
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat\n")
    notes = preflight.check("configs/sdxl.py", "v5p-64", [*gs, f"--config.data.path={captions}"])
    assert any("local paths outside the shipped folders" in n and f"data.path={captions}" in n for n in notes), notes
