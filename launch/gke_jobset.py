"""Render (and apply) a JobSet that runs amd_jax on one multi-host TPU slice of a GKE cluster.

  python launch/gke_jobset.py --slice=v5p-64 --image=IMAGE --config=configs/X.py --workdir=gs://B/D \\
      [--name=NAME] [--spot] [--max_restarts=3] [--module=amd_jax.train] [--no_check] [--dry_run] \\
      [-- --config.key=value ...]

First the config is loaded and validated on this machine with the slice's device and host counts
(launch/preflight.py: every check that needs no TPU, the task's required inputs included; gs:// paths are not
checked for existence; --no_check skips it). Errors are one line, exit code 2.
Without --dry_run (or its alias --dry-run) the manifest is piped to `kubectl apply -f -`. One pod per TPU host;
GKE injects TPU_WORKER_ID / TPU_WORKER_HOSTNAMES, which amd_jax.parallel.distributed.initialize() auto-detects.
Requires the JobSet controller on the cluster (kubectl apply --server-side -f the jobset release manifests).
"""

import os
import subprocess
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import preflight  # noqa: E402
from jobset_manifest import jobset, to_yaml, train_command  # noqa: E402

_SLICE = flags.DEFINE_string("slice", None, "Cloud TPU slice type, e.g. v5p-64 (see launch/slices.py).")
_IMAGE = flags.DEFINE_string("image", None, "Container image with the repo at its WORKDIR (launch/Dockerfile).")
_CONFIG = flags.DEFINE_string("config", None, "Config file, relative to the repo root in the image.")
_WORKDIR = flags.DEFINE_string("workdir", None, "gs:// directory for checkpoints and metrics.")
_NAME = flags.DEFINE_string("name", "amd-jax", "JobSet name.")
_MODULE = flags.DEFINE_enum("module", "amd_jax.train", ["amd_jax.train", "amd_jax.evaluate"], "Entry point.")
_SPOT = flags.DEFINE_bool("spot", False, "Schedule on Spot TPU nodes.")
_MAX_RESTARTS = flags.DEFINE_integer("max_restarts", 3, "Whole-JobSet restarts before it fails.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the manifest instead of applying it.")
flags.DEFINE_alias("dry-run", "dry_run")  # the spelling of launch/tpu_vm.sh
_NO_CHECK = flags.DEFINE_bool("no_check", False, "Skip the local config check (launch/preflight.py).")
flags.DEFINE_alias("no-check", "no_check")
flags.mark_flags_as_required(["slice", "image", "config", "workdir"])


def main(argv):
    overrides = [a for a in argv[1:] if a != "--"]  # the --config.key=value arguments after `--`
    try:
        command = train_command(_MODULE.value, _CONFIG.value, _WORKDIR.value, overrides)
        text = to_yaml(jobset(_NAME.value, _SLICE.value, _IMAGE.value, command, _SPOT.value, _MAX_RESTARTS.value))
    except ValueError as e:
        preflight.fail(e)
    if not _NO_CHECK.value:
        preflight.check_or_fail(_CONFIG.value, _SLICE.value, overrides)
    if _DRY_RUN.value:
        print(text, end="")
        return 0
    return subprocess.run(["kubectl", "apply", "-f", "-"], input=text, text=True).returncode


if __name__ == "__main__":
    preflight.run_absl(main)
