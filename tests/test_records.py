"""Caption records (amd_jax/data/records.py, amd_jax/tools/convert_inputs.py) read by PromptSource.

- the converter's records hold the source captions and arrays byte for byte (bfloat16 / float16 / float32,
  from .safetensors read lazily and from .npz);
- the batch at any step from records equals today's in-memory reader's for the same seed: the same rows in the same
  order, with groups, as one of several processes, with grain prefetch on, after a jump (a resume);
- a process reads only the records of its own rows (counted);
- damaged input (truncated or corrupted shard, missing sidecar, bad converter input) gives one clear line.
"""

from __future__ import annotations

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from amd_jax import tensor_files
from amd_jax.data import prompts as P
from amd_jax.data import records as R
from amd_jax.errors import ConfigError, DamagedFileError
from amd_jax.data import records_convert as convert_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTIONS = os.path.join(ROOT, "tests", "fixtures", "captions_tiny.txt")


def _inputs(tmp_path, n):
    rng = np.random.default_rng(0)
    emb = {"prompt_embeds": rng.standard_normal((n, 5, 4)).astype(ml_dtypes.bfloat16),
           "text_embeds": rng.standard_normal((n, 3)).astype(np.float16)}
    real = rng.standard_normal((n, 2, 2, 4)).astype(np.float32)
    safetensors.numpy.save_file(emb, str(tmp_path / "emb.safetensors"))
    tensor_files.write(tmp_path / "real.npz", {"latents": real})
    return emb, real


def _converted(tmp_path, per_shard=5):
    caps = P.read_captions(CAPTIONS)
    emb, real = _inputs(tmp_path, len(caps))
    out = str(tmp_path / "recs")
    shards = convert_inputs.convert(CAPTIONS, out, embeddings=str(tmp_path / "emb.safetensors"),
                                    real=str(tmp_path / "real.npz"), records_per_shard=per_shard)
    return caps, emb, real, out, shards


def test_records_round_trip_byte_exact(tmp_path):
    caps, emb, real, out, shards = _converted(tmp_path)
    assert len(shards) == 3 and [os.path.basename(s) for s in shards] == [
        f"captions-0000{i}.array_record" for i in range(3)]  # 12 captions, 5 per shard
    recs = R.Records(out)
    assert len(recs) == len(caps) == 12
    assert recs.schema == {"prompt_embeds": ("bfloat16", (5, 4)), "text_embeds": ("float16", (3,)),
                           "real": ("float32", (2, 2, 4))}
    order = np.random.default_rng(1).permutation(len(caps))  # random access, across shards, in any order
    got_caps, arrays = recs.read(order)
    assert got_caps == [caps[i] for i in order]
    for name, want in [*emb.items(), ("real", real)]:
        assert arrays[name].dtype == want.dtype and arrays[name].tobytes() == want[order].tobytes(), name
    assert recs[7] == caps[7] and P.read_captions(out) == caps
    assert R.Records(",".join(shards[1:]))[0] == caps[5]  # a list of shards is read in the order given


@pytest.mark.parametrize("group_size,first_row", [(1, 0), (2, 3), (4, 4)])
def test_record_batches_equal_the_in_memory_reader(tmp_path, group_size, first_row):
    caps, emb, real, out, _ = _converted(tmp_path)
    local = (lambda b: np.arange(first_row, b)) if first_row else None  # process 1 of 2 (a group may span them)
    memory = P.PromptSource(caps, 7, embeddings={k: np.asarray(v) for k, v in emb.items()}, real=real,
                            local_rows=local, group_size=group_size)
    fetched = P.PromptSource(R.Records(out), 7, local_rows=local, group_size=group_size, prefetch=(2, 3))
    assert fetched.precomputed and memory.precomputed
    # consecutive steps through the prefetch, then a jump back (a resume) and forward across epochs
    for step in [*range(6), 2, 3, 11, 0]:
        a, b = memory.global_batch(step, 8), fetched.global_batch(step, 8)
        assert a["cond"].keys() == b["cond"].keys()
        for k in a["cond"]:
            assert a["cond"][k].dtype == b["cond"][k].dtype and a["cond"][k].tobytes() == b["cond"][k].tobytes()
        np.testing.assert_array_equal(a["real"], b["real"])
        assert memory.prompts(step, 8) == fetched.prompts(step, 8)
    fetched._prefetch.close()


def test_records_without_arrays_are_encoded_and_real_can_be_left_out(tmp_path):
    caps = P.read_captions(CAPTIONS)
    convert_inputs.convert(CAPTIONS, str(tmp_path / "plain"))
    recs = R.Records(str(tmp_path / "plain"))
    assert recs.schema == {}

    def encode(prompts):
        return {"prompt_embeds": np.asarray([[len(p)] for p in prompts], np.float32)}

    a = P.PromptSource(caps, 3, encode=encode).global_batch(4, 6)
    b = P.PromptSource(recs, 3, encode=encode).global_batch(4, 6)
    np.testing.assert_array_equal(a["cond"]["prompt_embeds"], b["cond"]["prompt_embeds"])
    _, _, _, out, _ = _converted(tmp_path)
    gan_off = P.PromptSource(R.Records(out), 3, records_real=False).global_batch(4, 6)
    assert gan_off["real"].shape == (6, 1) and not gan_off["real"].any()


def test_a_process_reads_only_its_own_records(tmp_path):
    caps, emb, real, out, _ = _converted(tmp_path)
    recs = R.Records(out)
    seen = []
    read = recs._source.__getitems__
    recs._source.__getitems__ = lambda keys: seen.extend(keys) or read(keys)
    rows = np.arange(2, 4)  # process 1 of 4 at batch 8: rows 2 and 3
    src = P.PromptSource(recs, 5, local_rows=lambda b: rows, group_size=1)
    memory = P.PromptSource(caps, 5, embeddings={k: np.asarray(v) for k, v in emb.items()})
    for step in range(4):
        seen.clear()
        before = recs.records_read
        batch = src.global_batch(step, 8)
        want = [caps.index(p) for p in np.asarray(memory.prompts(step, 8))[rows]]  # the in-memory reader's rows
        assert sorted(seen) == sorted(want) and recs.records_read - before == 2
        assert not batch["real"][[0, 1, 4, 5, 6, 7]].any()  # other processes' rows: zeros, never read


def _damage(path, at, data=None):
    with open(path, "r+b") as f:
        if data is None:
            f.truncate(at)
        else:
            f.seek(at)
            f.write(data)


def test_damaged_shards_give_one_clear_line(tmp_path):
    _, _, _, out, shards = _converted(tmp_path)
    # a flipped byte inside a record's caption (stored uncompressed): ArrayRecord's chunk hash or our CRC-32
    data = open(shards[1], "rb").read()
    _damage(shards[1], data.index(P.read_captions(CAPTIONS)[6].encode()) + 2, b"#")
    recs = R.Records(out)
    recs.read(np.arange(5))  # the other shards still read
    with pytest.raises(DamagedFileError) as e:
        recs.read(np.arange(len(recs)))
    assert "captions-00001.array_record record 1 " in str(e.value) and "\n" not in str(e.value)
    prefetched = P.PromptSource(R.Records(out), 0, prefetch=(2, 2))  # raised in a grain thread, reaches the caller
    with pytest.raises(DamagedFileError, match="convert the captions again"):
        for step in range(3):
            prefetched.global_batch(step, 12)  # every caption once per step
    # truncated: the size recorded in the sidecar no longer matches
    _damage(shards[0], os.path.getsize(shards[0]) - 10)
    with pytest.raises(DamagedFileError, match="truncated or overwritten") as e:
        R.Records(out)
    assert "\n" not in str(e.value)
    os.remove(R.sidecar(shards[0]))
    with pytest.raises(DamagedFileError, match="has no sidecar"):
        R.Records(out)
    with pytest.raises(ConfigError, match="do not exist"):
        R.Records(str(tmp_path / "none.array_record"))


def test_record_decode_checks_the_record_itself():
    schema = {"e": ("float16", (2,))}
    good = R.encode("a cat", {"e": np.ones(2, np.float16)})
    assert R.decode(good, schema, "r")[0] == "a cat"
    flipped = bytearray(good)
    flipped[-6] ^= 1
    with pytest.raises(DamagedFileError, match="CRC-32"):
        R.decode(bytes(flipped), schema, "r")
    with pytest.raises(DamagedFileError, match="sidecar says"):
        R.decode(good, {"e": ("float32", (2,))}, "r")
    with pytest.raises(DamagedFileError, match="not an amd_jax caption record"):
        R.decode(b"garbage" * 3, schema, "r")


def test_converter_refuses_bad_input_in_one_line(tmp_path):
    caps = P.read_captions(CAPTIONS)
    _inputs(tmp_path, len(caps) - 1)  # one row short
    with pytest.raises(ConfigError, match="not one row per caption"):
        convert_inputs.convert(CAPTIONS, str(tmp_path / "o"), embeddings=str(tmp_path / "emb.safetensors"))
    assert not (tmp_path / "o").exists()  # checked before anything is written
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "amd_jax.tools.convert_inputs", f"--captions={CAPTIONS}",
           f"--embeddings={tmp_path / 'bad.safetensors'}", f"--out={tmp_path / 'o2'}"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("Conversion refused: --embeddings=") and len(res.stderr.splitlines()) == 1
    cmd[-2:] = [f"--out={tmp_path / 'o3'}"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and len(R.Records(str(tmp_path / "o3"))) == len(caps), res.stderr


def test_sdxl_task_reads_records_like_its_embedding_and_latent_files(tmp_path):
    """configs/sdxl_tiny.py with data.path = records (embeddings + real latents) gives the batches of data.path =
    captions + data.embeddings + data.real; records without real latents are refused with the GAN on."""
    from amd_jax import tasks
    from amd_jax.config import load

    caps = P.read_captions(CAPTIONS)
    rng = np.random.default_rng(2)
    emb = {"prompt_embeds": rng.standard_normal((len(caps), 77, 96)).astype(np.float32),
           "text_embeds": rng.standard_normal((len(caps), 64)).astype(np.float32)}
    tensor_files.write(tmp_path / "emb.safetensors", emb)
    tensor_files.write(tmp_path / "real.npz", {"latents": rng.standard_normal((len(caps), 4, 16, 16), np.float32)})
    convert_inputs.convert(CAPTIONS, str(tmp_path / "recs"), embeddings=str(tmp_path / "emb.safetensors"),
                           real=str(tmp_path / "real.npz"), records_per_shard=7)
    tiny = os.path.join(ROOT, "configs", "sdxl_tiny.py")
    files = load(tiny, {"gan.enabled": True, "data.embeddings": str(tmp_path / "emb.safetensors"),
                        "data.real": str(tmp_path / "real.npz"), "amd.group_size": 2})
    recs = load(tiny, {"gan.enabled": True, "data.path": str(tmp_path / "recs"), "amd.group_size": 2})
    want, got = tasks.build(files).data, tasks.build(recs).data
    assert got.records is not None and got.precomputed
    for step in (0, 1, 5):
        a, b = want.global_batch(step, 8), got.global_batch(step, 8)
        assert sorted(a["cond"]) == sorted(b["cond"])
        for k in a["cond"]:
            np.testing.assert_array_equal(a["cond"][k], b["cond"][k])
        np.testing.assert_array_equal(a["real"], b["real"])
    convert_inputs.convert(CAPTIONS, str(tmp_path / "no_real"), embeddings=str(tmp_path / "emb.safetensors"))
    with pytest.raises(ConfigError, match="hold none"):
        tasks.build(load(tiny, {"gan.enabled": True, "data.path": str(tmp_path / "no_real")}))
    with pytest.raises(ConfigError, match="leave data.embeddings and data.real empty"):
        tasks.build(load(tiny, {"data.path": str(tmp_path / "recs"), "data.real": str(tmp_path / "real.npz")}))
