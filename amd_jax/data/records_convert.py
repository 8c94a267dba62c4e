"""Caption files (+ precomputed embeddings and real latents) -> caption records (amd_jax/data/records.py): the
library half of `python -m amd_jax.tools.convert_inputs` (the command line lives there; tests and other code call
`convert` without defining its flags).

A .safetensors file is read one shard's rows at a time (safetensors' lazy slices), so its size is not bounded by
host memory; an .npz is read whole. Everything is checked before the first shard is written.
"""

from __future__ import annotations

import os

from amd_jax import caches, paths, tensor_files
from amd_jax.data.records import REAL
from amd_jax.errors import ConfigError, DamagedFileError

PREFIX = "captions"


class _Rows:
    """Per-caption arrays of one file, sliced by row range: safetensors lazily, anything else read whole."""

    def __init__(self, path: str, names: dict[str, str], flag: str):
        self.path, self.flag = path, flag
        if path.lower().endswith(".safetensors") and not paths.is_url(path):
            from safetensors import safe_open

            try:
                self._file = safe_open(path, "numpy")
                keys = list(self._file.keys())
            except Exception as e:  # safetensors raises its own SafetensorError on a bad header
                raise DamagedFileError(f"{flag}={path} cannot be read ({e}).") from None
            self._whole = None
        else:
            try:
                self._whole = tensor_files.read(path)
            except caches.UNREADABLE as e:
                raise DamagedFileError(f"{flag}={path} cannot be read ({type(e).__name__}: {e}).") from None
            keys = list(self._whole)
        self.names = {src: dst for src, dst in names.items() if src in keys} if names else {k: k for k in keys}
        if not self.names:
            raise ConfigError(f"{flag}={path} holds {keys}, none of {sorted(names)}.")

    def shape(self, src: str) -> tuple[int, ...]:
        if self._whole is not None:
            return tuple(self._whole[src].shape)
        return tuple(self._file.get_slice(src).get_shape())

    def rows(self, start: int, stop: int) -> dict:
        if self._whole is not None:
            return {dst: self._whole[src][start:stop] for src, dst in self.names.items()}
        return {dst: self._file.get_slice(src)[start:stop] for src, dst in self.names.items()}


def _arrays(embeddings: str, real: str) -> list[_Rows]:
    out = []
    if embeddings:
        emb = _Rows(embeddings, {}, "--embeddings")
        emb.names = {src: "text_embeds" if src == "pooled" else src for src in emb.names}
        if REAL in emb.names.values():
            raise ConfigError(f"--embeddings={embeddings} holds an array named 'real', the records' name for the real "
                              "latents: rename it, or give it as --real.")
        out.append(emb)
    if real:
        r = _Rows(real, {}, "--real")
        src = "latents" if "latents" in r.names else next(iter(r.names))
        if len(r.names) > 1 and "latents" not in r.names:
            raise ConfigError(f"--real={real} holds {sorted(r.names)}: name the latents 'latents'.")
        r.names = {src: REAL}
        out.append(r)
    return out


def convert(captions: str, out: str, field: str = "caption", embeddings: str = "", real: str = "",
            records_per_shard: int = 65536) -> list[str]:
    """Write `captions` (+ arrays) as caption records under `out`; returns the shard paths. Checks everything
    before writing (ConfigError / DamagedFileError)."""
    from amd_jax.data import prompts as P
    from amd_jax.data import records

    if paths.is_url(out):
        raise ConfigError(f"--out={out}: write the records to a local folder, then copy it to the bucket.")
    if records_per_shard < 1:
        raise ConfigError(f"--records_per_shard={records_per_shard}: give a positive number.")
    try:
        caps = P.read_captions(captions, field)
    except (FileNotFoundError, KeyError, ImportError, ValueError) as e:
        raise ConfigError(f"--captions={captions}: {str(e).strip(chr(34) + chr(39))}") from None
    sources = _arrays(embeddings, real)
    for s in sources:
        for src, dst in s.names.items():
            shape = s.shape(src)
            if not shape or shape[0] != len(caps):
                raise ConfigError(f"{s.flag}={s.path}: {src} has shape {shape}, not one row per caption "
                                  f"({len(caps)} captions in {captions}).")
    if os.path.isdir(out) and any(n.endswith(records.SUFFIX) for n in os.listdir(out)):
        raise ConfigError(f"--out={out} already holds records: give an empty or new folder.")
    os.makedirs(out, exist_ok=True)
    shards = []
    for i, start in enumerate(range(0, len(caps), records_per_shard)):
        stop = min(start + records_per_shard, len(caps))
        arrays = {}
        for s in sources:
            arrays.update(s.rows(start, stop))
        rows = [(caps[j], {k: v[j - start] for k, v in arrays.items()}) for j in range(start, stop)]
        shards.append(os.path.join(out, f"{PREFIX}-{i:05d}{records.SUFFIX}"))
        records.write_shard(shards[-1], rows)
    return shards
