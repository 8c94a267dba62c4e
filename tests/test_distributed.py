"""Two real JAX processes (4 CPU devices each, gloo) on localhost, joined by amd_jax.parallel.distributed.

This file is also the worker: `python tests/test_distributed.py MODE PORT PROCESS_ID CONFIG_JSON`.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 50
CONFIG = json.dumps({"method": {"name": "amd", "lr": 1e-5}, "batch_size": 8})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_pair(mode, configs, extra_env=()):
    port = _free_port()
    procs = []
    for pid, config in enumerate(configs):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
                   PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for k, v in dict(extra_env).items():
            env[k] = v.format(pid=pid, port=port)
        procs.append(subprocess.Popen([sys.executable, __file__, mode, str(port), str(pid), config], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        for p in procs:
            p.communicate()
        pytest.fail(f"{mode}: 2-process run did not finish in {TIMEOUT_S} s (killed)")
    return [(p.returncode, out) for p, out in zip(procs, outs)]


def test_two_processes_global_mean_and_consistency():
    for pid, (rc, out) in enumerate(_run_pair("explicit", [CONFIG, CONFIG])):
        assert rc == 0 and f"WORKER_OK process={pid} mode=explicit" in out, out


def test_auto_detection_via_slurm_env():
    # JAX's SlurmCluster reads these; initialize() must take the auto path and call initialize() with no args.
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
           "SLURM_PROCID": "{pid}", "SLURM_LOCALID": "{pid}", "JAX_COORDINATOR_PORT": "{port}"}
    for pid, (rc, out) in enumerate(_run_pair("auto", [CONFIG, CONFIG], env)):
        assert rc == 0 and f"WORKER_OK process={pid} mode=auto:slurm" in out, out


def test_different_configs_fail_on_every_process():
    other = json.dumps({"method": {"name": "amd", "lr": 2e-5}, "batch_size": 8})
    for rc, out in _run_pair("explicit", [CONFIG, other]):
        assert rc == 3, out
        assert "configs differ" in out and "method.lr: process 0 has 1e-05, process 1 has 2e-05" in out, out
        assert "Fix: run the identical command on every host" in out, out


def test_partial_flags_rejected_before_anything_runs():
    from amd_jax.parallel import distributed
    with pytest.raises(ValueError, match="must be given together"):
        distributed.initialize("127.0.0.1:1234", None, 0)


def _worker(mode, port, pid, config):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from amd_jax.parallel import distributed

    if mode == "explicit":
        got = distributed.initialize(f"127.0.0.1:{port}", 2, pid)
    else:
        got = distributed.initialize()
    assert distributed.initialize(f"127.0.0.1:{port}", 2, pid) == "already"  # idempotent
    assert (jax.device_count(), jax.local_device_count(), jax.process_count()) == (8, 4, 2)
    assert distributed.is_main_process() == (pid == 0)

    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    global_data = (np.arange(16 * 3, dtype=np.float32).reshape(16, 3) ** 1.5) % 7.0
    lo = min(idx[0].start for idx in sharding.addressable_devices_indices_map(global_data.shape).values())
    local = global_data[lo:lo + 8]  # this process's 4 devices hold 8 contiguous rows
    arr = jax.make_array_from_process_local_data(sharding, local, global_data.shape)
    for shard in arr.addressable_shards:  # each device holds the right rows of the GLOBAL data
        np.testing.assert_array_equal(np.asarray(shard.data), global_data[shard.index])
    mean = jax.jit(jnp.mean, out_shardings=NamedSharding(mesh, P()))(arr)
    np.testing.assert_allclose(float(mean), global_data.mean(), rtol=1e-6)
    try:
        distributed.check_consistent(config)
    except distributed.ConsistencyError as e:
        print(f"ConsistencyError: {e}", flush=True)
        sys.exit(3)
    print(f"WORKER_OK process={pid} mode={got}", flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
