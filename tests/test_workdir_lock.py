"""One writer per workdir (amd_jax/workdir_lock.py).

- In-process: the lock is taken and released; a second taker is refused naming the holder (host, pid, start
  time); a stale lock is taken over: a dead pid on this host, a reused pid (same pid, another start time), another
  host's heartbeat older than stale_s, an unreadable lock file that is old; a live one on another host is not; the
  object-store variant (write, settle, read back) refuses the loser of a race; a run whose lock was taken over
  notices it at its next check; release never removes another run's lock.
- End to end: two `python -m amd_jax.train` on one fresh workdir started together: exactly one trains (exit 0), the
  other exits 1 with one line naming the holder and the workdir is the single run's; a second run started while
  the first trains is refused at once and the first finishes; a run killed with kill -9 leaves its lock, and the
  next run takes it over and resumes.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from amd_jax import workdir_lock
from amd_jax.errors import OutputError, WorkdirBusyError
from amd_jax.workdir_lock import WorkdirLock
from procs import Train


def _record(path, **fields):
    me = workdir_lock._identity()
    rec = {"host": me["host"], "boot_id": me["boot_id"], "pid": os.getpid(),
           "pid_start": workdir_lock._pid_start(os.getpid()), "started": time.time() - 60,
           "heartbeat": time.time(), "token": "x" * 32, **fields}
    path.write_text(json.dumps(rec))
    return rec


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_taken_refused_released(tmp_path):
    with WorkdirLock(tmp_path, heartbeat_s=0) as lock:
        rec = json.loads((tmp_path / ".lock").read_text())
        assert rec["pid"] == os.getpid() and rec["host"] == socket.gethostname() and rec["token"] == lock.token
        with pytest.raises(WorkdirBusyError, match=rf"{tmp_path} is in use by another training run \(host "
                                                    rf"{re.escape(socket.gethostname())}, pid {os.getpid()}, started "
                                                    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d .*Nothing was changed"):
            WorkdirLock(tmp_path, heartbeat_s=0).acquire()
        assert json.loads((tmp_path / ".lock").read_text())["token"] == lock.token  # the refused one left it alone
    assert not (tmp_path / ".lock").exists()
    WorkdirLock(tmp_path, heartbeat_s=0).acquire().release()  # free again


@pytest.mark.parametrize("case", ["dead pid", "reused pid", "old heartbeat elsewhere", "old unreadable file",
                                  "host restarted"])
def test_stale_lock_is_taken_over(tmp_path, case, caplog):
    path = tmp_path / ".lock"
    if case == "dead pid":
        _record(path, pid=_dead_pid())
    elif case == "reused pid":  # this very process, but the lock says it started at another time
        _record(path, pid_start=(workdir_lock._pid_start(os.getpid()) or 0) + 12345)
    elif case == "old heartbeat elsewhere":
        _record(path, host="elsewhere", boot_id="other", heartbeat=time.time() - 400)
    elif case == "host restarted":
        _record(path, boot_id="an-earlier-boot")
    else:
        path.write_text('{"host": "half-writ')
        os.utime(path, (time.time() - 60, time.time() - 60))
    with WorkdirLock(tmp_path, heartbeat_s=0, stale_s=300) as lock:
        assert json.loads(path.read_text())["token"] == lock.token
    assert "Taking over the stale lock" in caplog.text


@pytest.mark.parametrize("case", ["live elsewhere", "fresh unreadable file", "live here"])
def test_live_lock_is_not_taken_over(tmp_path, case):
    path = tmp_path / ".lock"
    if case == "live elsewhere":  # another host, heartbeat 100 s old < stale_s
        _record(path, host="elsewhere", boot_id="other", heartbeat=time.time() - 100)
    elif case == "live here":
        _record(path)  # this process, alive
    else:
        path.write_text("")
    before = path.read_text()
    with pytest.raises(WorkdirBusyError):
        WorkdirLock(tmp_path, heartbeat_s=0, stale_s=300).acquire()
    assert path.read_text() == before


def test_heartbeat_refreshes_and_a_lost_lock_stops_the_run(tmp_path):
    lock = WorkdirLock(tmp_path, heartbeat_s=0.05).acquire()
    first = json.loads((tmp_path / ".lock").read_text())["heartbeat"]
    time.sleep(0.3)
    assert json.loads((tmp_path / ".lock").read_text())["heartbeat"] > first
    lock.check()
    _record(tmp_path / ".lock", host="elsewhere", boot_id="other", token="y" * 32)  # taken over by another run
    time.sleep(0.3)
    with pytest.raises(WorkdirBusyError, match="Another run took over the workdir lock .*host elsewhere"):
        lock.check()
    lock.release()
    assert json.loads((tmp_path / ".lock").read_text())["token"] == "y" * 32  # not removed: it is the other's


def test_object_store_variant_refuses_the_loser_of_a_race(tmp_path):
    """gs:// has no O_EXCL through epath: write, wait settle_s, read back (run here on a local path)."""
    a = WorkdirLock(tmp_path, heartbeat_s=0, settle_s=0.3, object_store=True)
    rival = threading.Timer(0.1, lambda: _record(tmp_path / ".lock", pid=_dead_pid(), host="other-vm",
                                                  boot_id="b", token="z" * 32))
    rival.start()  # another run's upload lands while `a` waits: the last writer keeps the lock
    with pytest.raises(WorkdirBusyError, match="host other-vm"):
        a.acquire()
    rival.join()
    (tmp_path / ".lock").unlink()
    with WorkdirLock(tmp_path, heartbeat_s=0, settle_s=0.0, object_store=True) as b:
        with pytest.raises(WorkdirBusyError):
            WorkdirLock(tmp_path, heartbeat_s=0, settle_s=0.0, object_store=True).acquire()
        assert json.loads((tmp_path / ".lock").read_text())["token"] == b.token
    assert not (tmp_path / ".lock").exists()


def test_unwritable_workdir_is_one_line(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    if subprocess.run(["chattr", "+i", str(wd)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(OutputError, match=rf"Cannot write the workdir lock into {wd}: Operation not permitted"):
            WorkdirLock(wd, heartbeat_s=0).acquire()
    finally:
        subprocess.run(["chattr", "-i", str(wd)], check=True)


def test_cost_of_the_lock(tmp_path):
    """Taking, refreshing and releasing the lock costs milliseconds (measured: see the README's Reliability table)."""
    times = []
    for _ in range(20):
        lock = WorkdirLock(tmp_path, heartbeat_s=0).acquire()
        lock.heartbeat()
        lock.release()
        times.append(lock.seconds)
    worst = {k: max(t[k] for t in times) for k in times[0]}
    print("lock cost, worst of 20 (s):", worst)
    assert worst["acquire"] < 0.5 and worst["heartbeat"] < 0.5 and worst["release"] < 0.5


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A trained teacher (one short run), copied into each workdir so that the runs below skip its training."""
    wd = tmp_path_factory.mktemp("teacher") / "run"
    with Train(wd, ["--config.total_steps=1", "--config.mesh.shape=(1,1)", "--config.eval.at_end=False",
                    "--config.log.sample_every=0"], tag="teacher") as run:
        assert run.wait(timeout=240) == [0], run.out()[-3000:]
    return wd / "teacher"


ARGS = ["--config.mesh.shape=(1,1)", "--config.log.sample_every=0"]
REFUSED = (r"Workdir error: (\S+) is in use by another training run \(host \S+, pid (\d+), started "
           r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def test_two_runs_started_together_one_trains(tmp_path):
    wd = tmp_path / "run"  # fresh: both would train the teacher
    with Train(wd, ARGS, tag="a") as a, Train(wd, ARGS, tag="b") as b:
        codes = a.wait(timeout=300) + b.wait(timeout=300)
    outs = [a.out(), b.out()]
    assert sorted(codes) == [0, 1], outs
    loser = outs[codes.index(1)]
    refused = re.search(REFUSED, loser)
    assert refused and refused.group(1) == str(wd), loser[-3000:]
    assert int(refused.group(2)) == (a.procs[0].pid if codes[0] == 0 else b.procs[0].pid)
    assert "Traceback" not in loser and "teacher" not in loser.lower()  # refused before anything was done
    assert len(json.loads((wd / "eval.json").read_text())) > 0 and not (wd / ".lock").exists()
    rows = [json.loads(line)["step"] for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert rows == [4, 8, 12, 12]  # one run's lines (the last: the final evaluation's), not two interleaved


def test_second_run_started_mid_run_is_refused_and_the_first_finishes(tmp_path, teacher):
    wd = tmp_path / "run"
    shutil.copytree(teacher, wd / "teacher")
    with Train(wd, ARGS + ["--config.total_steps=300"], tag="first") as first:
        first.wait_for(r"step 4/300 ", timeout=240)
        t0 = time.time()
        with Train(wd, ARGS + ["--config.total_steps=300"], tag="second") as second:
            assert second.wait(timeout=120) == [1], second.out()[-3000:]
        assert first.procs[0].poll() is None, first.out()[-3000:]  # still training
        refused = re.search(REFUSED, second.out())
        assert refused and int(refused.group(2)) == first.procs[0].pid, second.out()[-3000:]
        assert "Resumed" not in second.out() and time.time() - t0 < 60
        assert first.wait(timeout=300) == [0], first.out()[-3000:]
    assert "Traceback" not in second.out()


def test_lock_of_a_killed_run_is_taken_over(tmp_path, teacher):
    wd = tmp_path / "run"
    shutil.copytree(teacher, wd / "teacher")
    with Train(wd, ARGS + ["--config.checkpoint.every=2", "--config.log.every=1"], tag="killed") as run:
        run.wait_for(r"step 5/12 ", timeout=240)
        run.procs[0].kill()
        assert run.procs[0].wait() == -9
    pid = run.procs[0].pid
    assert json.loads((wd / ".lock").read_text())["pid"] == pid  # left behind by kill -9
    with Train(wd, ARGS, tag="next") as run:
        assert run.wait(timeout=240) == [0], run.out()[-3000:]
    out = run.out()
    assert re.search(rf"Taking over the stale lock {wd}/\.lock of a run that is gone \(host \S+, pid {pid}, .*"
                     rf"pid {pid} is no longer running on this host", out), out[-3000:]
    assert "Resumed from step" in out and not (wd / ".lock").exists()
