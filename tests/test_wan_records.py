"""The Wan task (amd_jax/tasks/wan) reading caption records (amd_jax/data/records.py) as data.path.

- The tiny fixture's captions, their umT5 embeddings (the fixture's own encoder, Assets.encode) and per-caption
  real latents, converted by the converter's library function (amd_jax/data/records_convert.py), give the same
  batches as the plain files (captions + data.embeddings + data.real) at every step asked, with groups, after a jump
  back (prefetch restarts); and each row's 'text' is the encoder's embedding of that row's caption.
- Records holding only the real latents: the captions are tokenized for the on-mesh encoder, as from the text file.
- Records that do not fit the config are refused when opened, in one line naming the problem and the fix.
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest

from amd_jax import tasks, tensor_files
from amd_jax.config import load
from amd_jax.data import prompts as P
from amd_jax.data import records_convert
from amd_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "wan_tiny.py")
CAPTIONS = os.path.join(ROOT, "tests", "fixtures", "captions_tiny.txt")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The plain files (embeddings.npz: 'text' from the fixture's umT5; real.safetensors: bfloat16 latents
    [N, 2, 4, 4, 4]) and the records converted from them, 5 per shard."""
    tmp = tmp_path_factory.mktemp("wan_records")
    from amd_jax.tasks.wan.assets import Assets

    caps = P.read_captions(CAPTIONS)
    emb = Assets(load(TINY)).encode(caps)["text"]  # [N, 16, 32] float32, padding zeroed
    assert emb.shape == (len(caps), 16, 32)
    real = np.random.default_rng(0).standard_normal((len(caps), 2, 4, 4, 4)).astype(ml_dtypes.bfloat16)
    tensor_files.write(tmp / "embeddings.npz", {"text": emb})
    tensor_files.write(tmp / "real.safetensors", {"latents": real})
    files = {"embeddings": str(tmp / "embeddings.npz"), "real": str(tmp / "real.safetensors")}
    records_convert.convert(CAPTIONS, str(tmp / "recs"), **files, records_per_shard=5)
    records_convert.convert(CAPTIONS, str(tmp / "real_only"), real=files["real"], records_per_shard=5)
    return tmp, caps, emb, real, files


def _equal_batches(want, got, steps, batch_size=4):
    for step in steps:
        a, b = want.global_batch(step, batch_size), got.global_batch(step, batch_size)
        assert want.prompts(step, batch_size) == got.prompts(step, batch_size)
        assert sorted(a["cond"]) == sorted(b["cond"])
        for k in a["cond"]:
            np.testing.assert_array_equal(a["cond"][k], b["cond"][k])
        np.testing.assert_array_equal(a["real"], b["real"])


def test_wan_batches_from_records_equal_the_plain_files(inputs):
    tmp, caps, emb, real, files = inputs
    common = {"gan.enabled": True, "amd.group_size": 2}
    plain = tasks.build(load(TINY, {**common, "data.embeddings": files["embeddings"], "data.real": files["real"]}))
    config = load(TINY, {**common, "data.path": str(tmp / "recs")})
    tasks.check(config)  # gan.enabled is satisfied by the records' real latents
    recs = tasks.build(config)
    assert recs.data.records is not None and recs.data.precomputed and recs.condition is None
    assert plain.condition is None
    _equal_batches(plain.data, recs.data, (0, 1, 5, 2))  # 2 after 5: a jump back restarts the prefetch
    batch = recs.data.global_batch(3, 4)
    index = [caps.index(p) for p in recs.data.prompts(3, 4)]
    assert index[0] == index[1] and index[2] == index[3]  # amd.group_size = 2
    np.testing.assert_array_equal(batch["cond"]["text"], emb[index])
    np.testing.assert_array_equal(batch["real"], real[index].astype(np.float32))
    assert batch["cond"]["reward_tokens"].shape == (4, 16)

    # real latents only: the captions are tokenized for the on-mesh encoder, as from the caption file
    plain = tasks.build(load(TINY, {**common, "data.real": files["real"]}))
    recs = tasks.build(load(TINY, {**common, "data.path": str(tmp / "real_only")}))
    assert recs.condition is not None and not recs.data.precomputed
    _equal_batches(plain.data, recs.data, (0, 4))


def test_records_that_do_not_fit_are_refused_in_one_line(inputs):
    tmp, caps, emb, real, files = inputs
    n = len(caps)
    tensor_files.write(tmp / "narrow.npz", {"text": emb[..., :8]})
    tensor_files.write(tmp / "sdxl.npz", {"prompt_embeds": emb, "text_embeds": emb[:, 0]})
    tensor_files.write(tmp / "image.npz", {"latents": np.zeros((n, 4, 4, 4), np.float32)})
    made = {"narrow": {"embeddings": str(tmp / "narrow.npz")}, "sdxl": {"embeddings": str(tmp / "sdxl.npz")},
            "image": {"embeddings": files["embeddings"], "real": str(tmp / "image.npz")},
            "no_real": {"embeddings": files["embeddings"]}}
    for name, kw in made.items():
        records_convert.convert(CAPTIONS, str(tmp / name), **kw)
    cases = [
        ("narrow", {}, "records hold text of shape (16, 8), Wan needs (16, 32) for this config: convert them again"),
        ("sdxl", {}, "records hold embeddings ['prompt_embeds', 'text_embeds']; Wan needs text (or no embeddings"),
        ("image", {}, "records hold real latents of shape (4, 4, 4), the model needs (2, 4, 4, 4): convert them"),
        ("no_real", {"gan.enabled": True}, "gan.enabled needs real latents, and the records of data.path="),
        ("recs", {"data.real": files["real"]}, "leave data.embeddings and data.real empty"),
    ]
    for name, overrides, message in cases:
        with pytest.raises(ConfigError) as e:
            tasks.build(load(TINY, {"data.path": str(tmp / name), **overrides}))
        assert message in str(e.value) and "\n" not in str(e.value), (name, str(e.value))
    with pytest.raises(ConfigError, match="gan.enabled needs data.real: .* or caption records holding them"):
        tasks.check(load(TINY, {"gan.enabled": True}))
