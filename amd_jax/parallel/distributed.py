"""Multi-host start-up: one `initialize` call at the top of every entry point.

Three cases, in this order:
  1. explicit --coordinator_address/--num_processes/--process_id: passed to `jax.distributed.initialize`
     (on a CPU-only host, cross-process CPU collectives are switched to gloo first);
  2. a cluster JAX can auto-detect (Cloud TPU VM metadata, GKE TPU env vars TPU_WORKER_HOSTNAMES /
     TPU_PROCESS_ADDRESSES, Slurm, Open MPI, Kubernetes with the `kubernetes` package):
     `jax.distributed.initialize()` with no arguments, JAX reads the rest;
  3. otherwise a single process: nothing to do.
Then `check_consistent(config.to_json())` makes every process prove it runs the same config on the same
device count, so a host with a stale checkout or a different override fails at step 0, not at a hang.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os

import jax
import numpy as np

log = logging.getLogger(__name__)


class ConsistencyError(RuntimeError):
    """Processes of one job disagree on the config or on the devices they see."""


def detect_cluster() -> str | None:
    """Name of the cluster JAX's own auto-detection would use ('gketpu', 'gcetpu', 'slurm', ...), or None."""
    try:
        from jax._src import clusters  # private: mirrors exactly what jax.distributed.initialize() checks
        for env in clusters.ClusterEnv._cluster_types:
            if not env.opt_in_only_method and env.is_env_present():
                return env.name or env.__name__
        return None
    except (ImportError, AttributeError):  # private API moved: fall back to the env vars it reads
        for var, name in (("TPU_WORKER_HOSTNAMES", "gketpu"), ("TPU_PROCESS_ADDRESSES", "gketpu"),
                          ("SLURM_JOB_ID", "slurm"), ("OMPI_MCA_orte_hnp_uri", "ompi")):
            if var in os.environ:
                return name
        return None


def _cpu_only() -> bool:
    from jax._src import cloud_tpu_init
    if cloud_tpu_init.running_in_cloud_tpu_vm:
        return False
    platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""
    if platforms:
        return {p.strip() for p in platforms.split(",")} == {"cpu"}
    return not any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin",
                                                          "jax_rocm7_plugin", "libtpu"))


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> str:
    """Joins the multi-process job (idempotent). Returns 'explicit', 'auto:<cluster>', 'single' or 'already'."""
    explicit = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise ValueError(
            "--coordinator_address, --num_processes and --process_id must be given together (or none of them, "
            f"to auto-detect); got coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
            f"process_id={process_id!r}.")
    if jax.distributed.is_initialized():
        return "already"
    if coordinator_address is not None:
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} must be in [0, --num_processes={num_processes}).")
        mode, kwargs = "explicit", dict(coordinator_address=coordinator_address, num_processes=num_processes,
                                        process_id=process_id)
    else:
        cluster = detect_cluster()
        if cluster is None:
            return "single"
        mode, kwargs = f"auto:{cluster}", {}
    if _cpu_only():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed initialized (%s): process %d of %d, %d local / %d global devices", mode,
             jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
    return mode


def is_main_process() -> bool:
    return jax.process_index() == 0


def _flatten(d, prefix=""):
    if not isinstance(d, dict):
        return {prefix or "<root>": d}
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _gather_texts(text: str) -> list[str]:
    from jax.experimental import multihost_utils
    data = np.frombuffer(text.encode(), np.uint8)
    n = int(np.max(multihost_utils.process_allgather(np.array([data.size], np.int32))))
    padded = np.zeros(n + 1, np.int32)  # +1: never a zero-length array
    padded[:data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [bytes(r[r > 0].astype(np.uint8)).decode() for r in rows]


def _config_diff(texts: list[str], limit: int = 8) -> list[str]:
    try:
        flat = [_flatten(json.loads(t)) for t in texts]
    except ValueError:
        return ["config text differs (not JSON, no per-key diff)"]
    lines = []
    for p, f in enumerate(flat[1:], start=1):
        for k in sorted(set(flat[0]) | set(f)):
            a, b = (repr(x[k]) if k in x else "<missing>" for x in (flat[0], f))
            if a != b:
                lines.append(f"{k}: process 0 has {a}, process {p} has {b}")
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def check_consistent(config_json: str) -> None:
    """Raises ConsistencyError on EVERY process if any two processes differ in config or device counts."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    digest = np.frombuffer(hashlib.sha256(config_json.encode()).digest(), np.uint8).astype(np.int32)
    row = np.concatenate([digest, [jax.device_count(), jax.local_device_count()]]).astype(np.int32)
    rows = np.asarray(multihost_utils.process_allgather(row))  # (processes, 34): identical on every process
    problems = []
    if (rows[:, 32:] != rows[0, 32:]).any():
        seen = ", ".join(f"process {p}: {g} global / {l} local" for p, (g, l) in enumerate(rows[:, 32:]))
        problems.append(f"device counts differ ({seen}). Fix: every host must see all its chips; check that no "
                        "other process holds the TPU (`sudo lsof -w /dev/accel*`, `/dev/vfio`) and that "
                        "TPU_VISIBLE_CHIPS / XLA_FLAGS are identical on every host.")
    if (rows[:, :32] != rows[0, :32]).any():
        diff = "\n    ".join(_config_diff(_gather_texts(config_json)))
        problems.append(f"configs differ:\n    {diff}\n  Fix: run the identical command on every host (same code "
                        "revision, same --config file, same --config.* overrides); launch/tpu_vm.sh and "
                        "launch/gke_jobset.py do this with one command for all workers.")
    if problems:
        raise ConsistencyError(f"The {len(rows)} processes of this job disagree:\n  " + "\n  ".join(problems))


def define_flags() -> None:
    """Defines --coordinator_address/--num_processes/--process_id (safe to call twice)."""
    from absl import flags
    if "coordinator_address" in flags.FLAGS:
        return
    flags.DEFINE_string("coordinator_address", None,
                        "host:port of process 0 (only without TPU/GKE/Slurm auto-detection).")
    flags.DEFINE_integer("num_processes", None, "Total number of processes (with --coordinator_address).")
    flags.DEFINE_integer("process_id", None, "Index of this process (with --coordinator_address).")


def initialize_from_flags(flags_values) -> str:
    return initialize(flags_values.coordinator_address, flags_values.num_processes, flags_values.process_id)
