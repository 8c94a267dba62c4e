"""`python -m amd_jax.train` in subprocesses for tests: the tests' compilation cache, logs in files, killed on timeout."""

import os
import re
import socket
import subprocess
import sys
import time

import jax
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        USE_TF="0",
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
        # JAX reads its config options from these variables: the same persistent cache as the test process
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "",
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(jax.config.jax_persistent_cache_min_compile_time_secs),
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=str(jax.config.jax_persistent_cache_min_entry_size_bytes),
    )


class Train:
    """`python -m amd_jax.train --config=configs/toy2d_tiny.py` in 1 or several processes (gloo, localhost).

    Use as a context manager: whatever still runs on exit (a failed assertion, a timeout) is SIGKILLed."""

    def __init__(self, workdir, args=(), processes: int = 1, devices_per_process: int = 1, tag: str = "run"):
        self.logs = [os.path.join(str(workdir) + f".{tag}.p{i}.log") for i in range(processes)]
        multi = []
        if processes > 1:
            multi = [f"--coordinator_address=127.0.0.1:{free_port()}", f"--num_processes={processes}"]
        self.procs = []
        for i, log in enumerate(self.logs):
            cmd = [sys.executable, "-m", "amd_jax.train", "--config=configs/toy2d_tiny.py", f"--workdir={workdir}",
                   *multi, *([f"--process_id={i}"] if multi else []), *args]
            with open(log, "w") as f:
                self.procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(devices_per_process), stdout=f,
                                                   stderr=subprocess.STDOUT))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def out(self, i: int = 0) -> str:
        with open(self.logs[i]) as f:
            return f.read()

    def _fail(self, why: str):
        self.kill()
        tails = "\n".join(f"--- process {i} ---\n" + self.out(i)[-3000:] for i in range(len(self.procs)))
        pytest.fail(f"{why} (killed)\n{tails}")

    def wait_for(self, pattern: str, timeout: float, i: int = 0) -> re.Match:
        """Poll process i's log for a regex; fail if it does not appear in time or the process ends first."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.out(i))
            if m:
                return m
            if self.procs[i].poll() is not None:
                self._fail(f"process {i} exited (rc {self.procs[i].returncode}) before logging {pattern!r}")
            time.sleep(0.2)
        self._fail(f"{pattern!r} not logged by process {i} within {timeout} s")

    def wait(self, timeout: float) -> list[int]:
        deadline = time.time() + timeout
        try:
            for p in self.procs:
                p.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            self._fail(f"not finished within {timeout} s")
        return [p.returncode for p in self.procs]
