"""Render (and apply) a JobSet that runs amd_jax on one multi-host TPU slice of a GKE cluster.

  python launch/gke_jobset.py --slice v5p-64 --image IMAGE --config configs/X.py --workdir gs://B/D \
      [--name NAME] [--spot] [--max_restarts 3] [--module amd_jax.train] [--dry-run] [-- --config.key=value ...]

Without --dry-run the manifest is piped to `kubectl apply -f -`. One pod per TPU host; GKE injects
TPU_WORKER_ID / TPU_WORKER_HOSTNAMES, which amd_jax.parallel.distributed.initialize() auto-detects.
Requires the JobSet controller on the cluster (kubectl apply --server-side -f the jobset release manifests).
"""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slices  # noqa: E402


def train_command(module, config, workdir, overrides):
    if not workdir.startswith("gs://"):
        raise ValueError(f"--workdir must be a gs:// path that every host can reach, got {workdir!r}")
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        raise ValueError(f"overrides must look like --config.key=value, got {bad}")
    return ["python", "-m", module, f"--config={config}", f"--workdir={workdir}", *overrides]


def jobset(name, slice_name, image, command, spot=False, max_restarts=3):
    s = slices.lookup(slice_name)
    selector = {"cloud.google.com/gke-tpu-accelerator": s["gke_accelerator"],
                "cloud.google.com/gke-tpu-topology": s["topology"]}
    if spot:
        selector["cloud.google.com/gke-spot"] = "true"
    tpu = {"google.com/tpu": s["chips_per_host"]}
    container = {"name": "amd-jax", "image": image, "command": command,
                 "ports": [{"containerPort": 8471}, {"containerPort": 8431}],
                 "securityContext": {"privileged": True},
                 "resources": {"requests": dict(tpu), "limits": dict(tpu)}}
    pod = {"restartPolicy": "Never", "hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet",
           "nodeSelector": selector, "containers": [container]}
    job = {"parallelism": s["hosts"], "completions": s["hosts"], "completionMode": "Indexed",
           "backoffLimit": 0, "template": {"spec": pod}}
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": name, "annotations": {
                "alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"}},
            "spec": {"failurePolicy": {"maxRestarts": max_restarts},
                     "replicatedJobs": [{"name": "slice", "replicas": 1, "template": {"spec": job}}]}}


def to_yaml(manifest):
    import yaml  # PyYAML ships with flax/transformers
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--slice", required=True)
    p.add_argument("--image", required=True, help="container image with the repo at its WORKDIR (launch/Dockerfile)")
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--name", default="amd-jax")
    p.add_argument("--module", default="amd_jax.train", choices=["amd_jax.train", "amd_jax.evaluate"])
    p.add_argument("--spot", action="store_true")
    p.add_argument("--max_restarts", type=int, default=3)
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true")
    args, overrides = p.parse_known_args(argv)
    overrides = [o for o in overrides if o != "--"]
    try:
        command = train_command(args.module, args.config, args.workdir, overrides)
        text = to_yaml(jobset(args.name, args.slice, args.image, command, args.spot, args.max_restarts))
    except ValueError as e:
        p.error(str(e))
    if args.dry_run:
        print(text, end="")
        return 0
    return subprocess.run(["kubectl", "apply", "-f", "-"], input=text, text=True).returncode


if __name__ == "__main__":
    sys.exit(main())
