"""The one reader and writer of flat {name: array} files: .safetensors, .npz and .npy, local or gs:// (etils epath).

The format follows the file name's suffix (case-insensitive): .safetensors, else npz when writing and whatever
`np.load` finds (npz or npy) when reading. Only formats that cannot run code are read:
safetensors, and npz / npy with ``allow_pickle=False``. Writes go through `caches.atomic_write_bytes`, so a crash
mid-write never leaves a partial file under the final name. Callers keep their own checks (expected keys, shapes,
dtypes) and their own error messages: what a read raises on a damaged file is one of `caches.UNREADABLE`.
"""

from __future__ import annotations

import io
from typing import Mapping

import numpy as np
from etils import epath

from amd_jax import caches, paths

NPY_KEY = "array"  # the key under which `read` returns the single array of an .npy file


def read(path) -> dict[str, np.ndarray]:
    """All arrays of `path`: .safetensors by suffix, anything else through `np.load` (npz, or npy as {NPY_KEY: a}).

    Local safetensors files are read with `safetensors.numpy.load_file` (memory-mapped); remote ones are read into
    memory first.
    """
    p = epath.Path(path)
    if p.name.lower().endswith(".safetensors"):
        import safetensors.numpy

        if paths.is_url(str(p)):
            return dict(safetensors.numpy.load(p.read_bytes()))
        return safetensors.numpy.load_file(str(p))
    data = np.load(io.BytesIO(p.read_bytes()), allow_pickle=False)
    if isinstance(data, np.ndarray):
        return {NPY_KEY: data}
    with data:
        return {k: data[k] for k in data.files}


def write(path, arrays: Mapping[str, np.ndarray], *, compress: bool = False,
          metadata: dict[str, str] | None = None) -> None:
    """Write `arrays` to `path` atomically: .safetensors (with optional string `metadata`) by suffix, any other
    name an npz (`compress`: `np.savez_compressed`, else `np.savez`), which `read` reads back whatever the suffix."""
    if epath.Path(path).name.lower().endswith(".safetensors"):
        import safetensors.numpy

        # safetensors copies raw memory: it must be C-ordered (np.asarray keeps 0-d arrays 0-d).
        data = safetensors.numpy.save({k: np.asarray(v, order="C") for k, v in arrays.items()}, metadata=metadata)
    else:
        buf = io.BytesIO()
        (np.savez_compressed if compress else np.savez)(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        data = buf.getvalue()
    caches.atomic_write_bytes(path, data)
