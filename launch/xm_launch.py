"""XManager launcher: build the image with XManager, run it on a multi-host TPU slice of a GKE cluster.

  python launch/xm_launch.py --slice=v5p-64 --image=REGISTRY/amd-jax:TAG --config=configs/X.py \\
      --workdir=gs://B/D [--name=amd-jax] [--spot] [--no_check] [--dry_run] -- [--config.key=value ...]

First the config is loaded and validated on this machine with the slice's device and host counts
(launch/preflight.py: every check that needs no TPU, the task's required inputs included; gs:// paths are not
checked for existence; --no_check skips it). Errors are one line, exit code 2.

--dry_run prints the job spec (executable, args, TPU type/topology) as JSON without importing xmanager.
Otherwise (pip install xmanager; docker + kubectl configured): XManager packages launch/Dockerfile and pushes
it to --image (xm_local.Kubernetes.Spec), then the slice is requested with the JobSet of launch/gke_jobset.py.
Why not xm_local.Kubernetes/Vertex executors for the run itself: in open-source XManager they create a
single-pod Job with no google.com/tpu request (Kubernetes) or only know TPU v2/v3 (Vertex), so they cannot
start an 8-host v5p slice; the JobSet can.
"""

import json
import os
import subprocess
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jobset_manifest  # noqa: E402
import preflight  # noqa: E402
import slices  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SLICE = flags.DEFINE_string("slice", None, "Cloud TPU slice type, e.g. v5p-64 (see launch/slices.py).")
_IMAGE = flags.DEFINE_string("image", None, "Image tag XManager pushes and the pods run.")
_CONFIG = flags.DEFINE_string("config", None, "Config file, relative to the repo root.")
_WORKDIR = flags.DEFINE_string("workdir", None, "gs:// directory for checkpoints and metrics.")
_NAME = flags.DEFINE_string("name", "amd-jax", "Experiment and JobSet name.")
_MODULE = flags.DEFINE_enum("module", "amd_jax.train", ["amd_jax.train", "amd_jax.evaluate"], "Entry point.")
_SPOT = flags.DEFINE_bool("spot", False, "Schedule on Spot TPU nodes.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the job spec and exit; xmanager is not imported.")
flags.DEFINE_alias("dry-run", "dry_run")  # the spelling of launch/tpu_vm.sh
_NO_CHECK = flags.DEFINE_bool("no_check", False, "Skip the local config check (launch/preflight.py).")
flags.DEFINE_alias("no-check", "no_check")
for _f in ("slice", "image", "config", "workdir"):
    flags.mark_flag_as_required(_f)


def job_spec(slice_name, image, config, workdir, overrides, name="amd-jax", module="amd_jax.train", spot=False):
    s = slices.lookup(slice_name)
    command = jobset_manifest.train_command(module, config, workdir, overrides)
    return {"name": name,
            "executable": {"kind": "xm.Dockerfile", "path": REPO, "dockerfile": "launch/Dockerfile",
                           "push_image_tag": image},
            "entrypoint": command[:3], "args": command[3:],
            "tpu": {k: s[k] for k in ("slice", "gke_accelerator", "topology", "hosts", "chips_per_host", "chips")},
            "spot": spot, "runs_as": "JobSet (launch/gke_jobset.py), one pod per TPU host"}


def launch(spec):
    from xmanager import xm, xm_local  # lazy: only a real launch needs xmanager
    with xm_local.create_experiment(experiment_title=spec["name"]) as experiment:
        [executable] = experiment.package([xm.Packageable(
            executable_spec=xm.Dockerfile(path=REPO, dockerfile=os.path.join(REPO, "launch", "Dockerfile")),
            executor_spec=xm_local.Kubernetes.Spec(push_image_tag=spec["executable"]["push_image_tag"]))])
        manifest = jobset_manifest.jobset(spec["name"], spec["tpu"]["slice"], executable.image_path,
                                          spec["entrypoint"] + spec["args"], spot=spec["spot"])
        subprocess.run(["kubectl", "apply", "-f", "-"], input=jobset_manifest.to_yaml(manifest), text=True, check=True)
        print(f"experiment {experiment.experiment_id}: JobSet {spec['name']} on {spec['tpu']['slice']}")


def main(argv):
    overrides = [a for a in argv[1:] if a != "--"]
    try:
        spec = job_spec(_SLICE.value, _IMAGE.value, _CONFIG.value, _WORKDIR.value, overrides, _NAME.value,
                        _MODULE.value, _SPOT.value)
    except ValueError as e:
        preflight.fail(e)
    if not _NO_CHECK.value:
        preflight.check_or_fail(_CONFIG.value, _SLICE.value, overrides)
    if _DRY_RUN.value:
        print(json.dumps(spec, indent=2))
        return
    launch(spec)


if __name__ == "__main__":
    preflight.run_absl(main)
