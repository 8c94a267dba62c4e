"""Prompt data through grain: caption files or TFDS, sharded by process, shuffled by seed, a pure function of step.

Sources (`read_captions` / `tfds_captions`):
    *.txt                 one caption per line (empty lines dropped)
    *.jsonl / *.json      one JSON object per line; the caption is `field` (dotted path, e.g. 'caption' or 'meta.text')
    *.parquet             column `field` (needs pyarrow, which is optional and not in requirements.txt)
    tfds:NAME[:SPLIT]     an ALREADY PREPARED TFDS dataset read as a random-access array_record source (no
                          TensorFlow needed to read; tensorflow_datasets must be installed), e.g. tfds:coco_captions
    *.array_record / a folder of them
                          caption records (amd_jax/data/records.py, written by `python -m
                          amd_jax.tools.convert_inputs`): each caption with its precomputed embeddings and real
                          latent, read by index, so a process reads only its own rows and nothing is loaded up front
Local paths or gs:// (etils.epath); several files may be given comma-separated. Each line / record is one caption.
The text formats and the `embeddings` / `real` arrays are read whole into memory on every host; records are not.

Order and resumption: the captions are a `grain.MapDataset`, `shuffle(seed).repeat()` (a new permutation per
epoch). Global row g of the run is `ds[g]`, and global batch `step` holds rows step*B .. step*B + B - 1, so the data
position is a pure function of the step: the checkpointed step IS the data position, on any mesh.

Groups (amd_jax/data/groups.py; `group_size` = K > 1): a global batch holds B / K captions, `ds[step*B/K + r//K]`
on row r, so rows [gK, (g+1)K) share one caption (each epoch still covers every caption once, in B / K per step).
Where a row's caption comes from depends only on (seed, step, row), so a group that spans processes is read by
each of them alike. Each caption read is encoded once and copied to its rows. 'real' (per-caption latents) is the
caption's one latent on each of its K rows: the file has one real sample per caption.

Sharding by process: `global_batch(step, B)` returns host arrays of the GLOBAL shape (what the session's
`put_batch` expects) but reads, tokenizes and encodes only the rows this process's devices hold under the batch
sharding (`local_rows`); the other rows are zeros that no device of this process ever reads.

Conditioning: `encode(prompts) -> {name: array [n, ...]}` (for SDXL the two tokenizers' ids: the task's `condition`
then runs the text encoders on the device mesh, amd_jax/conditioning.py) or precomputed per-caption embeddings
(`embeddings`: arrays [N, ...] indexed by the caption's index in the file, from an .npz / .safetensors written by
`amd_jax.tensor_files.write`).
`real`: optional per-caption real samples [N, ...] (e.g. VAE latents for the GAN); without it 'real' is zeros of
`real_shape` (the GAN must then be off). A `records.Records` source carries both in its records: its arrays named
REAL ('real') are the real samples, the others the precomputed conditioning.

Prefetch (`prefetch=(threads, depth)`): the reads of the next `depth` steps run ahead in grain threads
(amd_jax/data/prefetch.py); a step's batch is the same with or without it, and after any jump (a resume).
Tokenizing and encoding stay in the caller's thread.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import numpy as np
from etils import epath

from amd_jax.data import groups, records
from amd_jax.data import prefetch as prefetch_lib

REAL = "real"  # the name of the real samples among a record's arrays


# ------------------------------------------------------------------------------------------ reading
def _get_field(record: Any, field: str):
    for part in field.split(".") if field else ():
        record = record[part]
    return record


def _one_caption(value, index: int) -> str:
    """A caption from a string, bytes, or a list of captions (COCO: 5 per image; the first is taken)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    value = list(np.asarray(value).reshape(-1)) if not isinstance(value, (list, tuple)) else list(value)
    if not value:
        raise ValueError(f"record {index} has no caption")
    return _one_caption(value[0], index)


def _read_one(path: str, field: str) -> list[str]:
    p = epath.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"caption file {path!r} does not exist")
    name = p.name.lower()
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"{path}: reading parquet needs pyarrow (optional; `pip install pyarrow`).") from e
        with p.open("rb") as f:
            table = pq.read_table(f, columns=[field.split(".")[0]])
        col = table.column(field.split(".")[0]).to_pylist()
        rest = ".".join(field.split(".")[1:])
        return [_one_caption(_get_field(v, rest), i) for i, v in enumerate(col)]
    text = p.read_text(encoding="utf-8")
    if name.endswith((".jsonl", ".json")):
        out = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    out.append(_one_caption(_get_field(json.loads(line), field), i))
                except (KeyError, TypeError) as e:
                    raise KeyError(f"{path} line {i + 1}: no field {field!r} (set data.field).") from e
        return out
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_captions(paths: str | Sequence[str], field: str = "caption") -> list[str]:
    """All captions of one or several (comma-separated) local or gs:// files, in file order (of caption records:
    every record is read, for offline tools)."""
    if isinstance(paths, str) and records.is_records(paths):
        return records.Records(paths).captions()
    paths = [s.strip() for s in paths.split(",")] if isinstance(paths, str) else list(paths)
    captions = [c for p in paths if p for c in _read_one(p, field)]
    if not captions:
        raise ValueError(f"no captions in {paths}")
    return captions


class _TfdsCaptions:
    """Random-access captions of a prepared TFDS dataset (array_record files; TensorFlow not needed to read)."""

    def __init__(self, source, field: str):
        self.source, self.field = source, field

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        return _one_caption(_get_field(self.source[int(i)], self.field), int(i))


def tfds_captions(spec: str, data_dir: str | None = None, field: str = "captions.text"):
    """'tfds:NAME[:SPLIT]' -> random-access captions (coco_captions: field 'captions.text', first caption)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            f"data.path={spec!r} needs tensorflow_datasets (optional; `pip install tensorflow-datasets==4.9.10`) and "
            "the dataset prepared in array_record format under data.tfds_dir (building it needs TensorFlow)."
        ) from e
    _, name, *rest = spec.split(":")
    split = rest[0] if rest else "train"
    source = tfds.data_source(name, split=split, data_dir=data_dir or None)
    return _TfdsCaptions(source, field)


# ------------------------------------------------------------------------------------------ the source
class PromptSource:
    """`global_batch(step, B) -> {'cond': {...}, 'real': ...}`: a pure function of (seed, step), process-sharded."""

    def __init__(self, captions, seed: int, encode: Callable[[list[str]], dict] | None = None,
                 embeddings: dict[str, np.ndarray] | None = None, tokenize: dict[str, Callable] | None = None,
                 constants: dict[str, np.ndarray] | None = None, real: np.ndarray | None = None,
                 real_shape: tuple[int, ...] = (1,), local_rows: Callable[[int], np.ndarray] | None = None,
                 group_size: int = 1, prefetch: tuple[int, int] | None = None, records_real: bool = True):
        import grain

        self.captions = captions
        self.num_captions = len(captions)
        self.records = captions if isinstance(captions, records.Records) else None
        if self.records is not None and (embeddings is not None or real is not None):
            raise ValueError("caption records carry their own arrays: give no separate embeddings or real")
        if embeddings is not None:
            for k, v in embeddings.items():
                if len(v) != self.num_captions:
                    raise ValueError(f"precomputed {k} has {len(v)} rows for {self.num_captions} captions")
        if real is not None and len(real) != self.num_captions:
            raise ValueError(f"real samples have {len(real)} rows for {self.num_captions} captions")
        if encode is None and not self._precomputed(embeddings):
            raise ValueError("PromptSource needs `encode` or precomputed `embeddings`")
        self.encode, self.embeddings, self.tokenize = encode, embeddings, dict(tokenize or {})
        self.constants, self.real, self.real_shape = dict(constants or {}), real, tuple(real_shape)
        self._local_rows, self.group_size = local_rows, group_size
        self.records_real = records_real  # False: the records' real samples are not put in the batches (GAN off)
        # the caption index of each global row: shuffled per epoch from the seed, random access.
        self.ds = grain.MapDataset.range(self.num_captions).shuffle(seed=int(seed)).repeat(None)
        # (threads, depth): read the next `depth` steps' rows ahead in grain threads (amd_jax/data/prefetch.py)
        self._prefetch = prefetch_lib.StepPrefetch(self.fetch, *prefetch) if prefetch else None

    def _precomputed(self, embeddings) -> bool:
        if self.records is not None:
            return any(k != REAL for k in self.records.schema)
        return embeddings is not None

    @property
    def precomputed(self) -> bool:
        """Whether the batches hold precomputed embeddings (no `encode`)."""
        return self._precomputed(self.embeddings)

    def local_rows(self, batch_size: int) -> np.ndarray:
        if self._local_rows is None:
            return np.arange(batch_size)
        return np.asarray(self._local_rows(batch_size))

    def positions(self, step: int, batch_size: int, rows: np.ndarray) -> np.ndarray:
        """The dataset position of each of these rows of global batch `step`: K consecutive rows share one."""
        k = groups.size(self.group_size, batch_size)
        return int(step) * (batch_size // k) + np.asarray(rows) // k

    def read(self, positions: np.ndarray) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
        """(caption index, caption, {name: rows}) at each dataset position; the arrays are the precomputed
        embeddings and REAL (the real samples), where the source has them."""
        index = np.asarray([int(self.ds[int(p)]) for p in positions], np.int64)
        if self.records is not None:
            prompts, arrays = self.records.read(index)
            if not self.records_real:
                arrays.pop(REAL, None)
            return index, prompts, arrays
        arrays = {k: np.asarray(v[index]) for k, v in (self.embeddings or {}).items()}
        if self.real is not None:
            arrays[REAL] = np.asarray(self.real[index])
        return index, [self.captions[int(i)] for i in index], arrays

    def fetch(self, step: int, batch_size: int) -> tuple:
        """What this process reads for global batch `step`: (rows, to_rows, index, prompts, arrays); each distinct
        caption of its rows is read once (`to_rows` copies it to its rows). The part that `prefetch` runs ahead."""
        rows = self.local_rows(batch_size)
        positions, to_rows = np.unique(self.positions(step, batch_size, rows), return_inverse=True)
        return (rows, to_rows) + self.read(positions)

    def cond_for(self, prompts: list[str], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Conditioning rows for these captions (precomputed rows or `encode`d now) + tokens + constants."""
        n = len(prompts)
        if self.precomputed:
            cond = {k: np.asarray(v) for k, v in arrays.items() if k != REAL}
        else:
            cond = {k: np.asarray(v) for k, v in self.encode(prompts).items()}
        for k, tok in self.tokenize.items():
            cond[k] = np.asarray(tok(prompts))
        for k, v in self.constants.items():
            cond[k] = np.broadcast_to(np.asarray(v), (n,) + np.shape(v)).copy()
        return cond

    def global_batch(self, step: int, batch_size: int) -> dict:
        if self._prefetch is not None:
            rows, to_rows, _, prompts, arrays = self._prefetch.get(step, batch_size)
        else:
            rows, to_rows, _, prompts, arrays = self.fetch(step, batch_size)
        local = {k: v[to_rows] for k, v in self.cond_for(prompts, arrays).items()}
        if REAL in arrays:
            local_real = np.asarray(arrays[REAL][to_rows], np.float32)
        else:
            local_real = np.zeros((len(rows),) + self.real_shape, np.float32)
        if len(rows) == batch_size and np.array_equal(rows, np.arange(batch_size)):
            return {"cond": local, "real": local_real}

        def full(a):  # global shape; rows of other processes stay zero (never read by this process's devices)
            out = np.zeros((batch_size,) + a.shape[1:], a.dtype)
            out[rows] = a
            return out

        return {"cond": {k: full(v) for k, v in local.items()}, "real": full(local_real)}

    def prompts(self, step: int, batch_size: int) -> list[str]:
        """The global batch's captions (all rows; for logging / evaluation)."""
        return self.read(self.positions(step, batch_size, np.arange(batch_size)))[1]


def eval_prompts(config, source: "PromptSource", n: int) -> tuple[list[str], np.ndarray]:
    """The n evaluation prompts of a text-conditioned task, each caption `eval.samples_per_prompt` (K) times in a row,
    and each one's caption index: eval.prompts' captions, else the data's first ones (unshuffled)."""
    k = max(int(config.eval.get("samples_per_prompt", 1)), 1)
    if config.eval.prompts:
        caps = read_captions(config.eval.prompts, config.data.field)
    else:
        caps = [source.captions[i] for i in range(min(-(-n // k), source.num_captions))]
    index = (np.arange(n) // k) % len(caps)
    return [caps[g] for g in index], index


def eval_conds(config, encode: Callable[[list[str]], dict], source: "PromptSource", n: int) -> dict:
    """The host cond of the n evaluation prompts: `encode` (token ids for the mesh, or embeddings) over fixed batches
    of global_batch prompts (one compile of a text encoder), plus the source's extra tokenizers (the reward's)."""
    from amd_jax import batching

    prompts, _ = eval_prompts(config, source, n)
    cond = batching.map_fixed_batches(encode, prompts, max(int(config.global_batch), 1), fill="")
    for k, tok in source.tokenize.items():
        cond[k] = np.asarray(tok(prompts))
    return cond

