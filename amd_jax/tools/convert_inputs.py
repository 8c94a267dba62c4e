"""Convert caption files (+ precomputed embeddings and real latents) into caption records (amd_jax/data/records.py).

    python -m amd_jax.tools.convert_inputs --captions=captions.jsonl [--field=caption] \\
        [--embeddings=embeds.safetensors] [--real=latents.safetensors] --out=DIR [--records_per_shard=65536]
    (console script: amd-convert-inputs)

then train with --config.data.path=DIR (and data.embeddings / data.real left empty: the records carry them).

--captions: what data.path reads today (.txt / .jsonl / .json / .parquet, comma-separated for several).
--embeddings: an .npz / .safetensors of per-caption arrays [N, ...] (SDXL: prompt_embeds and text_embeds, as
prepare_sdxl writes them; Wan: 'text' [N, 512, 4096], the umT5 embeddings); every array is stored under its name, a
legacy 'pooled' as 'text_embeds'. --real: per-caption real latents [N, ...] ('latents', or the file's one array;
Wan: [N, 21, 60, 104, 16] channels-last), stored as 'real'. Row i of each is caption i; the task checks the names and
shapes when it opens the records. A .safetensors file is read one shard's rows at a time (safetensors' lazy slices),
so its size is not bounded by host memory; an .npz is read whole. Dtypes are kept (bfloat16 / float16 / float32 /
int32 / int64 / uint8).

Writes DIR/captions-00000.array_record, ... with their .json sidecars. Everything is checked before the first
shard is written (row counts, readable files): bad input exits non-zero with one line and writes nothing.
"""

from __future__ import annotations

import sys

from absl import flags

from amd_jax import cli, paths
from amd_jax.data.records_convert import convert
from amd_jax.errors import ConfigError, DamagedFileError

_CAPTIONS = flags.DEFINE_string("captions", None, "Caption file(s), comma-separated: .txt / .jsonl / .parquet.")
_FIELD = flags.DEFINE_string("field", "caption", "The caption field of a JSONL / parquet file (dotted path).")
_EMBEDDINGS = flags.DEFINE_string("embeddings", "", "Optional .npz / .safetensors of per-caption embeddings [N, ...].")
_REAL = flags.DEFINE_string("real", "", "Optional .npz / .safetensors of per-caption real latents [N, ...].")
_OUT = flags.DEFINE_string("out", None, "The local folder to write the shards to.")
_PER_SHARD = flags.DEFINE_integer("records_per_shard", 65536, "Records per shard (the last one holds the rest).")
flags.mark_flags_as_required(["captions", "out"])

def main(argv):
    del argv
    out = paths.absolute(_OUT.value)
    args = [paths.absolute(p.strip()) for p in _CAPTIONS.value.split(",")]
    try:
        shards = convert(",".join(args), out, _FIELD.value, paths.absolute(_EMBEDDINGS.value),
                         paths.absolute(_REAL.value), _PER_SHARD.value)
    except (ConfigError, DamagedFileError) as e:
        sys.exit(f"Conversion refused: {e}")
    print(f"wrote {len(shards)} shard(s) of caption records to {out}: use --config.data.path={out}")


if __name__ == "__main__":
    cli.run(main)
