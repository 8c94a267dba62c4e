"""Two real JAX processes (4 CPU devices each, gloo) train toy2d_tiny on ONE (data=4, fsdp=2) mesh of 8 devices.

The run (teacher loaded by both processes) is preempted by a SIGTERM sent to process 1 ONLY (both processes must
stop and save at the same step and exit 0), resumes from that step, and ends with the parameters and eval.json of a
1-process 8-device run of the same length. Only process 0 writes TensorBoard events.
Cost: process 1 recompiles on every launch (on CPU its persistent-cache key differs from process 0's and only
process 0 writes the cache), so this test uses the reference run's teacher instead of training one.
"""

import json
import re
import signal

import jax
import numpy as np
from jax.sharding import SingleDeviceSharding

from amd_jax.checkpoint import Checkpointer
from amd_jax import tasks
from amd_jax.loop import train
from amd_jax.session import Session
from procs import Train
from tiny import tiny_toy2d_config

MESH = "--config.mesh.shape=(4,2)"


def _steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_two_processes_preempt_resume_match_one_process(tmp_path):
    config = tiny_toy2d_config()
    config.mesh.shape = (4, 2)
    config.teacher.dir = str(tmp_path / "one" / "teacher")
    tasks.build(config).teacher()  # trained here, on one device, for both runs
    teacher = f"--config.teacher.dir={config.teacher.dir}"

    two = tmp_path / "two"
    with Train(two, [MESH, teacher, "--config.total_steps=400"], processes=2, devices_per_process=4, tag="a") as run:
        run.wait_for(r"step 4/400 ", timeout=180)
        run.procs[1].send_signal(signal.SIGTERM)  # a preemption notice reaching one host only
        assert run.wait(timeout=90) == [0, 0], run.out(0)[-3000:] + run.out(1)[-3000:]
    stops = [re.search(r"SIGTERM: saved step (\d+), exiting", run.out(i)) for i in (0, 1)]
    assert all(stops), run.out(0)[-2000:] + run.out(1)[-2000:]
    assert "workdir lock" in run.out(0) and "workdir lock" not in run.out(1)  # process 0 alone takes the lock
    assert not (two / ".lock").exists()  # released at the clean (SIGTERM) stop
    n = int(stops[0].group(1))
    assert int(stops[1].group(1)) == n and 4 < n < 400
    assert _steps(two)[-1] == n

    total = n + 4
    with Train(two, [MESH, teacher, f"--config.total_steps={total}"], processes=2, devices_per_process=4, tag="b") as run:
        assert run.wait(timeout=150) == [0, 0], run.out(0)[-3000:] + run.out(1)[-3000:]
    for i in (0, 1):
        assert f"Resumed from step {n} " in run.out(i), run.out(i)[-2000:]
    assert _steps(two)[-1] == total
    assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per launch: process 0 only

    config.total_steps = total
    one = Session(config, str(tmp_path / "one"))  # 1 process, 8 devices, the same length
    ref = train(one)

    dev0 = SingleDeviceSharding(jax.devices()[0])
    state, meta = Checkpointer(str(two)).restore(total, one.abstract_state,
                                                 jax.tree_util.tree_map(lambda _: dev0, one.abstract_state))
    assert meta["mesh"] == {"data": 4, "fsdp": 2} and int(state.step) == total
    for a, b in zip(jax.tree_util.tree_leaves((state.student, state.critic)),
                    jax.tree_util.tree_leaves((ref.student, ref.critic))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)

    got, want = (json.loads((d / "eval.json").read_text()) for d in (two, tmp_path / "one"))
    assert got["step"] == want["step"] == total and got["num_samples"] == want["num_samples"]
    for key in ("swd", "mmd", "reward_mean"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-2)
