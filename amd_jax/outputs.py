"""The run's writes outside checkpoints/ (samples, metrics.jsonl, TensorBoard, eval.json, the teacher, first-use
caches), through one guarded path: a folder that refuses a write ends the run with one line naming the folder and the
OS cause, never with a traceback, and after the newest state is saved (amd_jax/loop.py).

- `probe(folders)`, at start-up, before the teacher is trained or anything compiled: each folder the run will write
  (`run_folders`) is created, a small file is written and removed in it, and the files the run appends to
  (metrics.jsonl) are opened for appending. A read-only, full or inaccessible folder fails here, in seconds.
- `writing(folder)` around every write: an I/O failure (an OSError, or an error whose cause chain holds one or
  names an OS error code, as Orbax's and TensorStore's do) becomes `OutputError` "Cannot write <what> into
  <folder>: <cause>"; any other error passes unchanged. The folder is that of the file that failed when the error
  names one, else the one given.
- `together()`: only process 0 writes the outputs; a failure there must stop every process at the same point (the
  others would wait in the next collective), so at each guarded block the processes agree (one all-gather of a
  flag, multi-host runs only) and all raise the same OutputError.
Checkpoints have their own probe and errors (amd_jax/checkpoint.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re

import jax
import numpy as np
from etils import epath

from amd_jax.errors import OutputError


# The errors of a write that cannot happen here (permissions, read-only or full storage, a file where a folder
# should be); with only_write_errors, other OS errors (a missing input file, a network error while reading) pass.
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
                          errno.EIO, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ELOOP, errno.ENAMETOOLONG})


def io_cause(e: BaseException, only_write_errors: bool = False) -> tuple[str, str | None] | None:
    """(the OS cause in words, the file it names or None) when `e` or an exception of its chain is an I/O failure
    (with `only_write_errors`: one of WRITE_ERRNOS); None for any other error."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and (e.errno in WRITE_ERRNOS or not only_write_errors):
            cause = os.strerror(e.errno) if e.errno else (" ".join(str(e).split())[:200] or type(e).__name__)
            return cause, e.filename if isinstance(e.filename, str) else None
        code = re.search(r"os_error_code='?(\d+)", str(e))
        if code and (int(code.group(1)) in WRITE_ERRNOS or not only_write_errors):  # TensorStore's, via Orbax
            path = re.search(r'local file "([^"]+)"', str(e)) or re.search(r'"((?:/|gs://)[^"]+)"', str(e))
            return os.strerror(int(code.group(1))), path.group(1).rstrip("/") if path else None
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def writing(folder, what: str = "files", only_write_errors: bool = False):
    """Around a write into `folder`: an I/O failure becomes OutputError naming the folder and the cause.
    `only_write_errors`: around work that also reads (a stage that builds and saves a cache), convert only the
    errors of WRITE_ERRNOS."""
    try:
        yield
    except Exception as e:  # whatever the storage raised; only I/O failures are converted, the rest passes
        if type(e).__module__ == "amd_jax.errors":  # already a message for the user (OutputError, a refusal, ...)
            raise
        found = io_cause(e, only_write_errors)
        if found is None:
            raise
        raise OutputError(describe(folder, what, *found)) from e


def describe(folder, what: str, cause: str, filename: str | None = None) -> str:
    """'Cannot write <what> into <folder>: <cause> (<file>)'; a failing file outside `folder` names its own folder."""
    folder, name = str(folder).rstrip("/") or "/", ""
    if filename:
        filename = str(filename)
        if filename.startswith(folder + "/"):
            name = filename[len(folder) + 1:]
        else:
            folder, name = os.path.split(filename)
    return f"Cannot write {what} into {folder}: {cause}" + (f" ({name})" if name else "")


@contextlib.contextmanager
def together(*kinds: type[BaseException]):
    """Every process leaves the block with the same error when it failed on any process with one of `kinds`
    (default OutputError): only process 0 writes, and the others must not go on to wait in the next collective."""
    kinds = kinds or (OutputError,)
    error = None
    try:
        yield
    except kinds as e:
        error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        from amd_jax.parallel import distributed

        failed = np.asarray(multihost_utils.process_allgather(np.asarray(error is not None)))
        if failed.any() and error is None:
            first = int(np.argmax(failed))
            text = distributed._gather_texts("")[first]
            kind, _, message = text.partition(":")
            error = next((k for k in kinds if k.__name__ == kind), kinds[0])(f"{message} (on process {first})")
        elif failed.any():
            distributed._gather_texts(f"{type(error).__name__}:{error}")
    if error is not None:
        raise error


@contextlib.contextmanager
def guarded(folder, what: str = "files"):
    """`writing(folder, what)` inside `together()`: the guard of a write that only process 0 makes."""
    with together(), writing(folder, what):
        yield


def run_folders(c, workdir) -> dict[str, epath.Path]:
    """{what: folder} for every folder a training run of config `c` writes outside checkpoints/."""
    w = epath.Path(workdir)
    folders = {"metrics.jsonl, eval.json and the lock": w, "TensorBoard": w / "tensorboard",
               "samples": w / "samples"}
    if "teacher" in c and c.teacher.get("train_if_missing", False):
        teacher = epath.Path(c.teacher.dir) if c.teacher.dir else w / "teacher"
        # a teacher in this run's workdir, or one still to be made; a shared teacher that exists is only read
        if str(teacher).startswith(str(w).rstrip("/") + "/") or not (teacher / "params").exists():
            folders["the teacher"] = teacher
    if tuple(c.train.get("profile_steps", ())):
        folders["the profile"] = w / "profile"
    return folders


_TRAIN_FIX = "Nothing was trained: make it writable (or free space there), or give another --workdir."


def try_write(folder, name: str) -> None:
    """Create `folder`, write a small file `name` in it and remove it: the OSError of a read-only, full or
    inaccessible folder, raised here (the start-up probes of this module and of amd_jax/checkpoint.py)."""
    folder = epath.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("amd_jax checks that it can write here; safe to delete.\n")
    (folder / name).unlink()


def probe(folders: dict, append: tuple = (), fix: str = _TRAIN_FIX) -> None:
    """Create each folder, write and remove a small file in it, and open each existing file of `append` for
    appending; OutputError naming the first that refuses and the cause, then `fix`."""
    for what, folder in folders.items():
        with _probing(folder, what, fix):
            try_write(folder, f".write_probe.{os.getpid()}")
    for path in append:
        path = epath.Path(path)
        with _probing(path.parent, path.name, fix):
            if path.exists():
                with path.open("a"):
                    pass


@contextlib.contextmanager
def _probing(folder, what: str, fix: str):
    try:
        with writing(folder, what):
            yield
    except OutputError as e:
        raise OutputError(f"{e}. {fix}") from e


def quiet_storage_noise() -> None:
    """Keep a storage failure to the one line amd_jax prints for it (installed once, by setup_logging and by the
    first checkpoint read):
    - Orbax logs each failure of its background save threads at ERROR with a traceback (a full disk: hundreds of
      lines); records of the absl logger whose exception is an I/O failure (io_cause), and those of its threads
      stopped by the interpreter's exit, are dropped: the CheckpointError or OutputError names the folder and cause.
    - A read that fails part-way (e.g. a damaged array_metadatas) leaves Orbax's other reads behind: suspended
      coroutines that print 'Exception ignored in: <coroutine ...>' with a traceback when collected, and TensorStore
      callbacks that find Orbax's event loop closed ('RuntimeError: Event loop is closed'); Python's hook for such
      unraisable errors drops these two kinds.
    - TensorBoard's writer thread dies on a full disk with a traceback of its own; its error is raised again at the
      next write (OutputError): the thread's traceback is dropped.
    Every other record, unraisable error and thread exception is printed as before."""
    import logging
    import sys
    import threading

    hook = sys.unraisablehook
    if getattr(hook, "_amd_jax_quiet", False):
        return

    def quiet(unraisable):
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and "orbax" in code.co_filename:
            return
        if (unraisable.object is None and isinstance(unraisable.exc_value, RuntimeError)
                and str(unraisable.exc_value) == "Event loop is closed"):
            return
        hook(unraisable)

    quiet._amd_jax_quiet = True
    sys.unraisablehook = quiet
    thread_hook = threading.excepthook

    def quiet_thread(args):  # TensorBoard's writer thread: its failure is raised again at the next write
        if not (type(args.thread).__module__.startswith(("tensorboard", "orbax")) and io_cause(args.exc_value)):
            thread_hook(args)

    threading.excepthook = quiet_thread
    for name in ("absl", "asyncio"):  # Orbax logs through absl; its abandoned save tasks through asyncio
        logging.getLogger(name).addFilter(_drop_storage_failure_records)


def _drop_storage_failure_records(record) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if exc is None:
        return True
    if io_cause(exc) is not None:
        return False
    return "after interpreter shutdown" not in str(exc)
