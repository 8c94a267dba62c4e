"""Files built on first use and reused by later runs: written atomically, checked when read, rebuilt when damaged.

Writing: `atomic_write_bytes` puts the bytes in a temporary sibling (`.NAME.<random>.tmp`, same folder, so the same
file system), fsyncs it and renames it onto NAME (`os.replace`, atomic on POSIX): a crash mid-write leaves at most
a temporary file, never a partial file under the final name. On object stores (gs://, s3://, any URL) the bytes
are uploaded straight to NAME in one call: a single-object upload only becomes visible once it is complete, and
these stores have no atomic rename. Orbax checkpoints (the teacher) have their own atomic commit and do not come
here.

Reading: `load_or_build` treats a cache that exists but cannot be loaded (one of `UNREADABLE`, including the
`amd_jax.errors.DamagedFileError` of a failed key/shape/checksum check) as damaged: a warning names the file and
the reason, `move_aside` renames it to NAME.damaged (kept for inspection, never deleted) and the cache is rebuilt
as on first use. An npz is a zip whose members carry a CRC-32 that `zipfile` checks on every read (a flipped bit
raises BadZipFile), and truncation loses the zip's central directory; their keys and shapes are checked against
what the loader expects. Caches that hold parameters (a reward classifier, the held-out classifier; the teacher in
amd_jax/tasks/teacher.py) also carry the run checkpoints' per-array checksums (`checksums` when saved, `verify`
when loaded: a checksum that does not match, or a NaN, is damage) and are never written non-finite.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import uuid
import zipfile
import zlib
from typing import Callable, Sequence, TypeVar

import jax
import numpy as np
from etils import epath

from amd_jax import paths

log = logging.getLogger(__name__)

T = TypeVar("T")

# What reading a truncated or corrupted file raises: np.load (BadZipFile, EOFError, ValueError, zlib.error for a
# compressed member), gzip (OSError, EOFError), pickle, json and msgpack (ValueError), PIL (OSError),
# Orbax/TensorStore (ValueError, OSError).
UNREADABLE = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` (local or URL) so that `path` holds either its old content or all of `data`."""
    target = epath.Path(paths.absolute(str(path)))
    target.parent.mkdir(parents=True, exist_ok=True)
    if paths.is_url(str(target)):
        target.write_bytes(data)  # one single-object upload: visible only when complete (module docstring)
        return
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "xb") as f:  # a fresh name: concurrent writers of the same cache never share a file
            _write(f, data)
            f.flush()
            os.fsync(f.fileno())  # the bytes reach the disk before the name does
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write(f, data: bytes) -> None:
    """The one write of `atomic_write_bytes` (a seam for tests that simulate a crash halfway)."""
    f.write(data)


def move_aside(path, reason: str) -> epath.Path | None:
    """Rename a damaged `path` (file or folder) to `<name>.damaged` (`.damaged.1`, ... if taken) and warn.

    Returns the new path, or None when `path` is already gone (another process on the same host moved it).
    On object stores the rename is epath's copy-then-delete.
    """
    path = epath.Path(path)
    for i in itertools.count():
        dest = path.parent / (f"{path.name}.damaged" + (f".{i}" if i else ""))
        if not dest.exists():
            break
    try:
        path.rename(dest)
    except FileNotFoundError:
        return None
    log.warning("%s is damaged (%s): moved it to %s; rebuilding it as on first use", path, reason, dest)
    return dest


def describe(error: BaseException) -> str:
    """A one-line description of why a file could not be read, for the warning and the error messages."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first[:300]}" if first else type(error).__name__


def load_or_build(files: Sequence, load: Callable[[], T], build: Callable[[], T], save: Callable[[T], None],
                  write: bool = True) -> T:
    """A first-use cache: `load()` when its files exist and can be read, else `build()`, stored by `save(value)`.

    files: the cache's paths; `files[0]` is the one `save` writes last, so its presence means "complete".
    load: raises one of UNREADABLE when the files cannot be used (DamagedFileError for a failed check); the files
    are then moved aside (`move_aside`) and the cache rebuilt.
    write: False on processes that must leave the files alone (where only process 0 writes): a missing or damaged
    cache is rebuilt in memory there, and neither moved nor saved.
    """
    files = [epath.Path(f) for f in files]
    if files[0].exists():
        try:
            return load()
        except UNREADABLE as e:
            why = describe(e)
        if write:
            for f in files:
                if f.exists():
                    move_aside(f, why)
        else:
            log.warning("%s cannot be used (%s): rebuilding it in memory (process 0 replaces it)", files[0], why)
    value = build()
    if write:
        save(value)
    return value


def tree_mismatch(tree, expected) -> str:
    """'' when `tree` has the keys, shapes and dtypes of `expected` (leaves with .shape and .dtype), else the first
    difference, e.g. "['w'] is float32[784, 10], expected float32[64, 10]"."""

    def flat(t):
        return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(t)[0]}

    got, want = flat(tree), flat(expected)
    if got.keys() != want.keys():
        return f"missing {sorted(want.keys() - got.keys())}, unexpected {sorted(got.keys() - want.keys())}"
    for key, w in want.items():
        g = got[key]
        if tuple(g.shape) != tuple(w.shape) or np.dtype(g.dtype) != np.dtype(w.dtype):
            return f"{key} is {np.dtype(g.dtype)}{list(g.shape)}, expected {np.dtype(w.dtype)}{list(w.shape)}"
    return ""


# ------------------------------------------------------------------------ checksums of first-use parameters
# A first-use artefact that holds parameters (the teacher, a reward classifier, the held-out classifier) is stored
# with the per-array checksums the run's checkpoints carry (amd_jax.checkpoint.digest, one record
# {"algorithm", "arrays"} as in a checkpoint's meta) and verified when loaded; a non-finite one is never written.


def checksums(tree, what: str, folder, fix: str) -> dict:
    """The checksum record of `tree` (host numpy, this process's copy), to be stored with it.

    NonFiniteError, before anything is written, when it holds a NaN or an infinity: `what` names the artefact,
    `folder` where it would have gone and `fix` the knob most likely at fault."""
    from amd_jax import checkpoint
    from amd_jax.errors import NonFiniteError

    sums, nonfinite = checkpoint.digest(tree, local=True)
    if nonfinite:
        raise NonFiniteError(
            f"{what} ended with non-finite parameters ({len(nonfinite)} of {len(sums)} arrays, first: {nonfinite[0]}): "
            f"nothing was written in {folder}. {fix}")
    return {"algorithm": checkpoint.CHECKSUM, "arrays": sums}


def verify(tree, record, required: bool = True) -> None:
    """DamagedFileError unless `tree` (as loaded) matches its stored checksum `record` and is finite.

    `required=False`: a missing record (a file written before amd_jax stored checksums) is accepted, and only the
    finiteness is checked; else it is damage (a cache rebuilds it)."""
    from amd_jax import checkpoint
    from amd_jax.errors import DamagedFileError

    if record is None and required:
        raise DamagedFileError("it has no checksums (written before amd_jax stored them)")
    sums, nonfinite = checkpoint.digest(tree, local=True)
    if record is not None:
        if not isinstance(record, dict):
            raise DamagedFileError(f"its checksum record is not a JSON object: {str(record)[:80]!r}")
        problem = checkpoint.compare(record, sums)
        if problem:
            raise DamagedFileError(problem)
    if nonfinite:
        raise DamagedFileError(f"it holds non-finite values ({len(nonfinite)} arrays, first: {nonfinite[0]})")


def fingerprint(tree) -> str:
    """The content digest (16 hex digits) of a host tree: amd_jax.checkpoint.fingerprint of its checksums."""
    from amd_jax import checkpoint

    return checkpoint.fingerprint(checkpoint.digest(tree, local=True)[0])
