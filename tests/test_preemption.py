"""SIGTERM (a TPU preemption notice) to a training process: it saves a checkpoint at the step it reached and
exits 0; the resumed run starts exactly at that step and ends with the parameters of an uninterrupted run."""

import re
import signal

import jax
import numpy as np
from jax.sharding import SingleDeviceSharding

from amd_jax.checkpoint import Checkpointer
from amd_jax.loop import train
from amd_jax.session import Session
from procs import Train
from tiny import tiny_toy2d_config

# one device; a long run whose only checkpoint is the SIGTERM one; logs every step; no samples or eval
ARGS = {"mesh.shape": (1, 1), "checkpoint.every": 100_000, "log.every": 1, "log.sample_every": 0, "eval.at_end": False}


def _flags(**extra):
    return [f"--config.{k}={v}".replace(" ", "") for k, v in {**ARGS, **extra}.items()]


def _steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_sigterm_saves_exits_zero_and_resumes_without_losing_a_step(tmp_path):
    wd = tmp_path / "run"
    with Train(wd, _flags(total_steps=400), tag="a") as run:
        run.wait_for(r"step 3/400 ", timeout=150)
        run.procs[0].send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == [0], run.out()[-3000:]
    m = re.search(r"SIGTERM: saved step (\d+), exiting", run.out())
    assert m, run.out()[-3000:]
    n = int(m.group(1))
    assert 3 <= n < 400 and _steps(wd) == [n]
    assert f"step {n}/400 " in run.out() and f"step {n + 1}/400 " not in run.out()  # the last step done was saved

    total = n + 3
    with Train(wd, _flags(total_steps=total), tag="b") as run:
        assert run.wait(timeout=120) == [0], run.out()[-3000:]
    out = run.out()
    assert f"Resumed from step {n} " in out, out[-3000:]
    logged = [int(s) for s in re.findall(rf"step (\d+)/{total} ", out)]
    assert logged == list(range(n + 1, total + 1)), logged  # first step after the saved one, none lost or repeated
    assert _steps(wd) == [n, total]

    config = tiny_toy2d_config(total_steps=total)
    for k, v in ARGS.items():
        section, key = k.split(".")
        config[section][key] = v
    config.teacher.dir = str(wd / "teacher")
    ref_session = Session(config, str(tmp_path / "uninterrupted"), devices=jax.devices()[:1])
    ref = train(ref_session)
    dev0 = SingleDeviceSharding(jax.devices()[0])
    state, _ = Checkpointer(str(wd)).restore(total, ref_session.abstract_state,
                                             jax.tree_util.tree_map(lambda _: dev0, ref_session.abstract_state))
    assert int(state.step) == int(ref.step) == total
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
