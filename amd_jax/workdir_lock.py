"""One training run per workdir: WORKDIR/.lock, taken before the run writes or deletes anything there.

Two runs on one workdir overwrite each other's checkpoints, metrics and teacher. `python -m amd_jax.train` takes
this lock first (process 0 of a multi-host job alone; every process stops if it is refused); a second run meets a
one-line refusal naming the holder (host, pid, start time, last heartbeat) and exits non-zero without touching the
workdir. `evaluate` never takes it (it only reads the run, and writes into DIR/eval or --out).

The lock file is JSON: host, boot_id (the kernel's, /proc/sys/kernel/random/boot_id), pid, pid_start (the process's
start time in clock ticks, /proc/PID/stat), started, heartbeat (seconds since the epoch) and a random token.

Taking it, local folders (any POSIX file system, NFS included): `os.open(O_CREAT | O_EXCL)` creates it atomically,
so of two runs started together exactly one gets it. The whole take, stale-lock check included, runs under an
`fcntl.flock` of the workdir folder itself (no extra file), so two runs that find the same stale lock take it over
one after the other, not both; where the file system has no flock, O_EXCL alone decides who creates the file.
Object stores (gs://, s3://, any URL; etils.epath has no create-if-absent there): write-then-verify. A run that finds
no live lock writes its lock object (one single-object upload, visible only whole), waits `settle_s` (2 s) and reads
it back: GCS reads are strongly consistent, so of two runs that both found no lock, the one whose upload landed
last keeps it and the other reads that one's token and refuses. A tie needs an upload slower than `settle_s`; the
heartbeat closes it: it re-reads the object first, and a run that finds another token there has lost the lock and
stops before its next checkpoint (`check`, WorkdirBusyError), leaving the workdir to the other.

Stale locks (the holder died without releasing: kill -9, a crashed host): on the same host (same hostname and boot
id) the holder is dead when its pid is gone, a zombie, or now belongs to a process started at another time (pid
reuse); on another host (a shared NFS folder, gs://) when its heartbeat, rewritten every `heartbeat_s` (30 s) by a
background thread, is older than `stale_s` (300 s). A stale lock is taken over with a warning naming the dead
holder. Releasing (normal exit, an error, SIGTERM's clean stop) removes the file if it still holds this run's token.
Two containers with the same hostname and kernel sharing one folder would be taken for one host: give them distinct
hostnames (Docker and Kubernetes do by default).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid

from etils import epath

from amd_jax import outputs, paths
from amd_jax.errors import OutputError, WorkdirBusyError

log = logging.getLogger("amd_jax")

NAME = ".lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0
SETTLE_S = 2.0  # object stores only


class WorkdirLock:
    """`acquire()` or refuse (WorkdirBusyError; OutputError when the workdir cannot be written); `release()`;
    `check()` before each checkpoint (raises if another run took the lock over). A context manager too."""

    def __init__(self, workdir, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S,
                 settle_s: float = SETTLE_S, object_store: bool | None = None):
        self.workdir = str(workdir)
        self.path = epath.Path(self.workdir) / NAME
        self.object_store = paths.is_url(self.workdir) if object_store is None else object_store
        self.heartbeat_s, self.stale_s, self.settle_s = heartbeat_s, stale_s, settle_s
        self.token = uuid.uuid4().hex
        self.held, self.lost, self.started = False, None, None
        self.seconds = {"acquire": 0.0, "heartbeat": 0.0, "release": 0.0}  # the lock's own cost, measured
        self._stop = threading.Event()
        self._thread = None

    # ------------------------------------------------------------------------------------------- taking it
    def acquire(self) -> "WorkdirLock":
        t0 = time.perf_counter()
        self.started = time.time()
        try:
            with outputs.writing(self.workdir, "the workdir lock"):
                epath.Path(self.workdir).mkdir(parents=True, exist_ok=True)
                if self.object_store:
                    self._acquire_object()
                else:
                    with _folder_flock(self.workdir):
                        self._acquire_local()
        except OutputError as e:
            raise OutputError(f"{e}. The run writes everything there: make the workdir writable (or free space "
                              "there), or give another --workdir. Nothing was trained.") from e
        self.held = True
        self.seconds["acquire"] = time.perf_counter() - t0
        if self.heartbeat_s > 0:
            self._thread = threading.Thread(target=self._beat, name="workdir-lock-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _acquire_local(self):
        for _ in range(3):  # a stale lock removed, then created anew: another run can only win the O_EXCL race
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                fd = None
            if fd is None:
                self._refuse_unless_stale(self._read())
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self._record())
                f.flush()
                os.fsync(f.fileno())
            return
        self._refuse(self._read())

    def _acquire_object(self):
        if self.path.exists():
            holder = self._read()
            self._refuse_unless_stale(holder)
        self.path.write_text(self._record())
        time.sleep(self.settle_s)
        holder = self._read()
        if holder.get("token") != self.token:
            self._refuse(holder)

    def _refuse_unless_stale(self, holder: dict):
        dead = self._dead(holder)
        if not dead:
            self._refuse(holder)
        log.warning("Taking over the stale lock %s of a run that is gone (%s; %s).", self.path, describe(holder),
                    dead)

    def _refuse(self, holder: dict):
        raise WorkdirBusyError(
            f"{self.workdir} is in use by another training run ({describe(holder)}; lock file {self.path}): two runs "
            "in one workdir overwrite each other's checkpoints. Nothing was changed. Wait for that run to end or stop "
            f"it, or give another --workdir; if it is dead on another host, delete {self.path} (it is taken over by "
            f"itself once its heartbeat is {self.stale_s:.0f} s old).")

    def _dead(self, holder: dict) -> str:
        """Why the holder is dead ('' if it may be alive)."""
        if not holder.get("token"):  # unreadable: a lock being written right now, or a foreign file
            age = time.time() - holder.get("mtime", time.time())
            return f"unreadable lock file, {age:.0f} s old" if age > 10 else ""
        me = _identity()
        if holder.get("host") == me["host"] and holder.get("boot_id") == me["boot_id"]:
            pid = holder.get("pid")
            if not isinstance(pid, int) or not _alive(pid, holder.get("pid_start")):
                return f"pid {pid} is no longer running on this host"
            return ""
        if holder.get("host") == me["host"] and holder.get("boot_id") and me["boot_id"]:
            return "this host has restarted since"
        age = time.time() - float(holder.get("heartbeat", 0))
        return f"no heartbeat for {age:.0f} s (> {self.stale_s:.0f} s)" if age > self.stale_s else ""

    # ------------------------------------------------------------------------------------------- holding it
    def _record(self) -> str:
        return json.dumps({**_identity(), "pid": os.getpid(), "pid_start": _pid_start(os.getpid()),
                           "started": self.started, "heartbeat": time.time(), "token": self.token}, indent=1)

    def _read(self) -> dict:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                return {"mtime": self.path.stat().mtime}
            return {}

    def heartbeat(self):
        """Rewrite the heartbeat, after checking the lock is still this run's (else `lost` is set)."""
        t0 = time.perf_counter()
        holder = self._read()
        if holder.get("token") != self.token:
            self.lost = holder
            log.error("The workdir lock %s is no longer this run's (%s): the run stops before its next checkpoint.",
                      self.path, describe(holder) if holder else "the file is gone")
            return
        data = self._record()
        if self.object_store:
            self.path.write_text(data)
        else:  # atomically: a reader never sees half a lock
            tmp = self.path.parent / f".{NAME}.{self.token[:8]}.tmp"
            tmp.write_text(data)
            os.replace(tmp, self.path)
        self.seconds["heartbeat"] = time.perf_counter() - t0

    def _beat(self):
        warned = False
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.heartbeat()
            except OSError as e:  # a passing storage problem: the next beat tries again
                if not warned:
                    log.warning("Could not refresh the workdir lock %s: %s", self.path, e)
                    warned = True
            if self.lost:
                return

    def check(self):
        """Raise WorkdirBusyError if another run has taken this run's lock over (stale heartbeat, object-store
        race): checked before every checkpoint, so that only one run keeps writing."""
        if self.lost is not None:
            holder = describe(self.lost) if self.lost else "the file was removed"
            raise WorkdirBusyError(f"Another run took over the workdir lock {self.path} ({holder}): this run stops "
                                   f"without saving, leaving {self.workdir} to it.")

    def release(self):
        t0 = time.perf_counter()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.held and self.lost is None:
            try:
                if self._read().get("token") == self.token:
                    self.path.unlink()
            except OSError as e:
                log.warning("Could not remove the workdir lock %s: %s (the next run takes it over as stale).",
                            self.path, e)
        self.held = False
        self.seconds["release"] = time.perf_counter() - t0

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def describe(holder: dict) -> str:
    """'host H, pid P, started 2025-01-01 12:00:00 UTC, last heartbeat 3 s ago' of a lock's record."""
    if not holder.get("token"):
        return "an unreadable lock file"
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(holder.get("started", 0))))
    age = time.time() - float(holder.get("heartbeat", 0))
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {started}, last heartbeat {age:.0f} s ago"


def acquire_for_job(workdir, **kwargs) -> WorkdirLock | None:
    """The lock, taken by process 0 (returned there; None on the others); every process raises the same error if
    process 0 could not take it."""
    import jax

    lock = None
    with outputs.together(WorkdirBusyError, OutputError):
        if jax.process_index() == 0:
            lock = WorkdirLock(workdir, **kwargs).acquire()
            log.info("workdir lock %s taken in %.2f ms", lock.path, 1e3 * lock.seconds["acquire"])
    return lock


# ------------------------------------------------------------------------------------------- this host
def _identity() -> dict:
    boot = ""
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    return {"host": socket.gethostname(), "boot_id": boot}


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _pid_start(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _alive(pid: int, start: int | None) -> bool:
    """The process `pid` runs (not a zombie) and, when both are known, started at `start` (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc: the signal said it exists
    if fields[0] == "Z":
        return False
    return start is None or _pid_start(pid) == start


@contextlib.contextmanager
def _folder_flock(folder: str):
    """An exclusive flock of the folder itself for the block; nothing where the file system has none."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no flock here (some FUSE and network file systems): O_EXCL alone
            pass
        yield
    finally:
        os.close(fd)
