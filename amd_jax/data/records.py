"""Caption records: one ArrayRecord record per caption (its text and optionally its arrays), read lazily by index.

Why: the caption files of amd_jax/data/prompts.py, and their .safetensors / .npz embeddings and real latents, are
read whole into host memory on every host. Records are read by index (random access), so each process reads only
the captions of the rows its devices hold, and a million-caption set costs no host memory up front.

Layout: a folder of shards `*.array_record`, read in sorted name order (or one shard, or a comma-separated list);
record i of the whole set is caption i of the source it was converted from (`python -m
amd_jax.tools.convert_inputs`). Each shard has a sidecar `SHARD.array_record.json`:
    {"format": "amd_jax.records", "version": 1, "records": n, "bytes": file size,
     "arrays": {name: [dtype, shape]}}
checked when opened (format, version, the shard's size: a truncated or extended shard is refused; the record count
ArrayRecord finds; the same arrays in every shard). Shards are written with `group_size:1,uncompressed` (one
record per chunk, not compressed: embeddings and latents barely compress, and a random read then costs one read).

One record (little-endian):
    8 bytes   MAGIC b"AMDREC01"
    4 bytes   uint32 H, the header's length
    H bytes   JSON {"caption": str, "arrays": [[name, dtype, shape], ...]}
    payload   each array's C-order bytes, in header order
    4 bytes   uint32 CRC-32 of everything before it
checked when read: magic, CRC, the header's arrays equal to the shard's sidecar, the payload's length.
Any failure is `DamagedFileError` naming the shard and the record.

A task reads its records through `open_for_task` (SDXL, Wan): the task names the embeddings it reads and the shape
of its real latents, and the checks and their one-line errors are the same for every task.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from typing import Mapping, Sequence

import ml_dtypes
import numpy as np
from etils import epath

from amd_jax.errors import ConfigError, DamagedFileError

MAGIC = b"AMDREC01"
FORMAT, VERSION = "amd_jax.records", 1
SUFFIX = ".array_record"
WRITER_OPTIONS = "group_size:1,uncompressed"  # one record per chunk, stored as is: a random read is one read
DTYPES = {name: np.dtype(t) for name, t in (("float16", np.float16), ("bfloat16", ml_dtypes.bfloat16),
                                            ("float32", np.float32), ("int32", np.int32), ("int64", np.int64),
                                            ("uint8", np.uint8))}
_HEAD = struct.Struct("<I")
REAL = "real"  # the real latents' name among a record's arrays (the others are precomputed conditioning)


# ------------------------------------------------------------------------------------------ one record
def encode(caption: str, arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of one record (module docstring); `arrays` keep their dtype, which must be one of DTYPES."""
    spec, payload = [], []
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.name not in DTYPES:
            raise ConfigError(f"array {name!r} has dtype {a.dtype.name}; records hold {sorted(DTYPES)}.")
        spec.append([name, a.dtype.name, list(a.shape)])
        payload.append(np.ascontiguousarray(a).tobytes())
    header = json.dumps({"caption": caption, "arrays": spec}, ensure_ascii=False).encode()
    body = MAGIC + _HEAD.pack(len(header)) + header + b"".join(payload)
    return body + _HEAD.pack(zlib.crc32(body))


def decode(data: bytes, schema: Mapping[str, tuple[str, tuple[int, ...]]], where: str):
    """(caption, {name: array}) of one record, checked against `schema` ({name: (dtype, shape)}); `where` names
    the record in the error."""
    def damaged(what):
        return DamagedFileError(f"{where} is damaged ({what}): convert the captions again "
                                "(python -m amd_jax.tools.convert_inputs).")

    if len(data) < len(MAGIC) + 8 or data[:len(MAGIC)] != MAGIC:
        raise damaged("not an amd_jax caption record")
    if zlib.crc32(data[:-4]) != _HEAD.unpack(data[-4:])[0]:
        raise damaged("CRC-32 mismatch")
    n = _HEAD.unpack_from(data, len(MAGIC))[0]
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start:start + n])
    except ValueError as e:
        raise damaged(f"unreadable header: {e}") from None
    found = {name: (dtype, tuple(shape)) for name, dtype, shape in header["arrays"]}
    if found != dict(schema):
        raise damaged(f"arrays {found}, the shard's sidecar says {dict(schema)}")
    sizes = [int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize for dtype, shape in found.values()]
    have = len(data) - 4 - (start + n)
    if have != sum(sizes):
        raise damaged(f"payload of {have} bytes, its arrays need {sum(sizes)}")
    arrays, offset = {}, start + n
    for (name, (dtype, shape)), size in zip(found.items(), sizes):
        dt = DTYPES[dtype]
        arrays[name] = np.frombuffer(data, dt, count=size // dt.itemsize, offset=offset).reshape(shape)
        offset += size
    return header["caption"], arrays


# ------------------------------------------------------------------------------------------ shards
def is_records(spec: str) -> bool:
    """Whether a data path names records: a path ending in .array_record, or a folder holding some."""
    parts = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not parts:
        return False
    if all(p.endswith(SUFFIX) for p in parts):
        return True
    folder = epath.Path(parts[0])
    return len(parts) == 1 and folder.is_dir() and any(p.name.endswith(SUFFIX) for p in folder.iterdir())


def shard_paths(spec: str) -> list[str]:
    """The shards of `spec` (module docstring), in reading order."""
    parts = [s.strip() for s in str(spec).split(",") if s.strip()]
    if len(parts) == 1 and epath.Path(parts[0]).is_dir():
        folder = epath.Path(parts[0])
        parts = sorted(str(p) for p in folder.iterdir() if p.name.endswith(SUFFIX))
        if not parts:
            raise ConfigError(f"{spec!r} holds no {SUFFIX} shards: convert captions with "
                              "python -m amd_jax.tools.convert_inputs.")
    for p in parts:
        if not p.endswith(SUFFIX) or not epath.Path(p).exists():
            raise ConfigError(f"caption records {p!r} do not exist (a record shard ends in {SUFFIX}; its sidecar "
                              f"{SUFFIX}.json is beside it).")
    return parts


def sidecar(shard: str) -> str:
    return shard + ".json"


def write_shard(path: str, rows: Sequence[tuple[str, Mapping[str, np.ndarray]]]) -> None:
    """Write one shard and its sidecar. The shard is written under a temporary name and renamed when complete; the
    sidecar is written last, so a shard without a sidecar is an incomplete conversion."""
    from array_record.python.array_record_module import ArrayRecordWriter

    schema = None
    tmp = f"{path}.tmp"
    writer = ArrayRecordWriter(tmp, WRITER_OPTIONS)
    try:
        for caption, arrays in rows:
            spec = {k: [np.asarray(v).dtype.name, list(np.shape(v))] for k, v in arrays.items()}
            if schema is None:
                schema = spec
            elif spec != schema:
                raise ConfigError(f"{path}: a row has arrays {spec}, the first had {schema}; every row needs the "
                                  "same names, dtypes and shapes.")
            writer.write(encode(caption, arrays))
    finally:
        writer.close()
    os.replace(tmp, path)
    meta = {"format": FORMAT, "version": VERSION, "records": len(rows), "bytes": os.path.getsize(path),
            "arrays": schema or {}}
    from amd_jax import caches

    caches.atomic_write_bytes(sidecar(path), json.dumps(meta, indent=1).encode())


def _read_sidecar(shard: str) -> dict:
    side = epath.Path(sidecar(shard))
    if not side.exists():
        raise DamagedFileError(f"{shard} has no sidecar {side.name} (an incomplete conversion?): convert the captions "
                               "again (python -m amd_jax.tools.convert_inputs).")
    try:
        meta = json.loads(side.read_text())
        ok = meta.get("format") == FORMAT and meta.get("version") == VERSION
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise DamagedFileError(f"{side} is not an {FORMAT} v{VERSION} sidecar: convert the captions again.")
    size = epath.Path(shard).stat().length
    if size != meta["bytes"]:
        raise DamagedFileError(f"{shard} has {size} bytes, its sidecar says {meta['bytes']} (truncated or "
                               "overwritten): convert the captions again (python -m amd_jax.tools.convert_inputs).")
    return meta


# ------------------------------------------------------------------------------------------ reading
class Records:
    """Random-access caption records: `len`, `records[i]` (the caption), `read(index)` (captions and arrays).

    Opening reads only the sidecars and the shards' indices; rows are read when asked for, through grain's
    ArrayRecordDataSource (`__getitems__`: one call, read in parallel by ArrayRecord). `records_read` counts the
    records read so far (thread-safe), to show that a process reads only its own rows.
    """

    def __init__(self, spec: str):
        import grain

        self.shards = shard_paths(spec)
        metas = [_read_sidecar(s) for s in self.shards]
        schemas = {json.dumps(m["arrays"], sort_keys=True) for m in metas}
        if len(schemas) > 1:
            raise ConfigError(f"the shards of {spec!r} hold different arrays ({sorted(schemas)}): convert them "
                              "together.")
        self.schema = {k: (d, tuple(s)) for k, (d, s) in metas[0]["arrays"].items()}
        try:
            self._source = grain.sources.ArrayRecordDataSource(self.shards)
        except Exception as e:  # ArrayRecord's reader raises RuntimeError/ValueError on an unreadable footer
            raise DamagedFileError(f"caption records {spec!r} cannot be opened ({_first_line(e)}): convert the "
                                   "captions again.") from None
        self._ends = np.cumsum([m["records"] for m in metas])
        if len(self._source) != int(self._ends[-1]):
            raise DamagedFileError(f"caption records {spec!r} hold {len(self._source)} records, their sidecars say "
                                   f"{int(self._ends[-1])}: convert the captions again.")
        self._lock, self.records_read = threading.Lock(), 0

    def __len__(self) -> int:
        return int(self._ends[-1])

    @property
    def embedding_names(self) -> list[str]:
        """The names of the precomputed conditioning arrays: every array but the real latents (REAL)."""
        return sorted(set(self.schema) - {REAL})

    def __getitem__(self, i) -> str:
        return self.read(np.asarray([int(i)]))[0][0]

    def _where(self, i: int) -> str:
        shard = int(np.searchsorted(self._ends, i, side="right"))
        first = int(self._ends[shard - 1]) if shard else 0
        return f"{self.shards[shard]} record {i - first}"

    def read(self, index: np.ndarray) -> tuple[list[str], dict[str, np.ndarray]]:
        """(captions, {name: [n, ...]}) of records `index` (in that order)."""
        index = [int(i) for i in np.asarray(index).reshape(-1)]
        try:
            raw = self._source.__getitems__(index)
        except Exception:  # ArrayRecord raises on a chunk whose hash or framing is wrong: find and name the record
            raw = [self._read_one(i) for i in index]
        with self._lock:
            self.records_read += len(index)
        rows = [decode(r, self.schema, self._where(i)) for i, r in zip(index, raw)]
        arrays = {k: np.stack([a[k] for _, a in rows]) if rows else
                  np.zeros((0,) + s, DTYPES[d]) for k, (d, s) in self.schema.items()}
        return [c for c, _ in rows], arrays

    def _read_one(self, i: int) -> bytes:
        try:
            return self._source[i]
        except Exception as e:
            raise DamagedFileError(f"{self._where(i)} cannot be read ({_first_line(e)}): convert the captions "
                                   "again (python -m amd_jax.tools.convert_inputs).") from None

    def captions(self) -> list[str]:
        """Every caption, in order (offline tools only: this reads every record)."""
        out = []
        for start in range(0, len(self), 4096):
            out += self.read(np.arange(start, min(start + 4096, len(self))))[0]
        return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ------------------------------------------------------------------------------------------ a task's records
PREFETCH = (2, 4)  # a task reading records: 2 grain threads read up to 4 steps ahead (amd_jax/data/prefetch.py)
CONVERT = "python -m amd_jax.tools.convert_inputs"


def open_for_task(config, task: str, embeddings: Mapping[str, tuple[int, ...] | None],
                  real_shape: tuple[int, ...]) -> Records:
    """data.path's caption records for a text-to-image/video task (SDXL, Wan), checked when opened, one ConfigError
    line each: no separate data.embeddings / data.real (the records carry them); embeddings exactly the names of
    `embeddings` ({name: shape of one row, or None for any}) or none at all (the task then encodes the captions);
    real latents (REAL) of `real_shape`; and some with gan.enabled.

    Why here: every task that reads records needs the same checks against its own names and shapes, so each one
    names its expectations and shares the rest."""
    d = config.data
    if d.embeddings or d.real:
        raise ConfigError(f"data.path={d.path!r} is caption records, which carry their own embeddings and real "
                          "latents: leave data.embeddings and data.real empty (convert them into the records with "
                          f"{CONVERT} --embeddings=... --real=...).")
    recs = Records(d.path)
    names = recs.embedding_names
    if names and set(names) != set(embeddings):
        raise ConfigError(f"data.path={d.path!r}: records hold embeddings {sorted(names)}; {task} needs "
                          f"{' and '.join(sorted(embeddings))} (or no embeddings: the captions are encoded on the "
                          "mesh).")
    for name in names:
        want = embeddings[name]
        if want is not None and recs.schema[name][1] != tuple(want):
            raise ConfigError(f"data.path={d.path!r}: records hold {name} of shape {recs.schema[name][1]}, {task} "
                              f"needs {tuple(want)} for this config: convert them again from embeddings of that "
                              f"shape ({CONVERT} --embeddings=...).")
    if REAL in recs.schema and recs.schema[REAL][1] != tuple(real_shape):
        raise ConfigError(f"data.path={d.path!r}: records hold real latents of shape {recs.schema[REAL][1]}, the "
                          f"model needs {tuple(real_shape)}: convert them again with --real=LATENTS of that shape.")
    if config.gan.enabled and REAL not in recs.schema:
        raise ConfigError(f"gan.enabled needs real latents, and the records of data.path={d.path!r} hold none: "
                          "convert them with --real=LATENTS, or set --config.gan.enabled=False.")
    return recs


def gan_without_real(config) -> bool:
    """gan.enabled with neither data.real nor records as data.path (whose real latents are checked when opened)."""
    return bool(config.gan.enabled) and not config.data.real and not is_records(config.data.path)
