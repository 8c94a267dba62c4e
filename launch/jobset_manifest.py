"""The GKE JobSet that runs amd_jax on one multi-host TPU slice: the command every pod runs and the manifest.

Shared by the two launchers that request a slice this way, gke_jobset.py and xm_launch.py (their command lines).
"""

import os
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
