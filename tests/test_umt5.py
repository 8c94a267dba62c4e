"""umT5 encoder (Wan's text encoder) in Flax vs transformers' PyTorch UMT5EncoderModel, and its torch-free loader.

tests/fixtures/umt5_tiny is a tiny random UMT5EncoderModel (2 layers, d_model 32, 4 heads of 8, d_ff 64, vocab
128, 8 buckets up to distance 16) saved by transformers' save_pretrained under text_encoder/, with PyTorch's
float32 last_hidden_state on 3 rows of 24, 10 and 17 tokens (the rest padding), diffusers' WanPipeline
post-processing of it, and transformers' own relative-position buckets for the tiny and the umT5-XXL settings
(made by tests/fixtures/make_umt5_fixtures.py). Every comparison prints its max abs difference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from amd_jax import tensor_files
from amd_jax.errors import ConfigError
from amd_jax.models.common.hf_folders import WeightError
from amd_jax.models.umt5 import encoder as umt5, weights as umt5_weights
from tiny import close_to_reference as _close

FIX = pathlib.Path(__file__).parent / "fixtures" / "umt5_tiny"
TOL = 1e-4  # float32 CPU vs float32 PyTorch on outputs up to |4.8| (measured 1.5e-6)
BF16_TOL = 0.1  # bfloat16 matmuls (8-bit mantissa) on outputs up to |4.8| (measured 0.027, mean 0.0046)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "reference.npz"))




def _hidden(cfg, params, ref):
    apply = jax.jit(lambda p, ids, mask: umt5.UMT5Encoder(cfg).apply({"params": p}, ids, mask))
    return apply(params, ref["input_ids"], ref["attention_mask"])


# ------------------------------------------------------------------------------------------------- parity
def test_fixture_is_what_the_script_saved():
    report = json.loads((FIX / "reference.json").read_text())
    weights = FIX / "text_encoder" / "model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == report["model_sha256"]
    assert sorted(tensor_files.read(weights)) == report["saved_tensors"]


def test_relative_position_buckets_match_transformers(ref):
    for table, buckets, distance in (("buckets_tiny", 8, 16), ("buckets_xxl", 32, 128)):
        got = umt5.relative_position_bucket(ref["relative"], buckets, distance)
        wrong = np.flatnonzero(got != ref[table])
        assert wrong.size == 0, f"{table}: relative positions {ref['relative'][wrong][:10]} bucketed differently"
    cfg = umt5.UMT5Config(**umt5.UMT5_XXL)
    square = umt5.relative_position_buckets(5, cfg)  # [i, j] is the bucket of j - i
    np.testing.assert_array_equal(square[1], umt5.relative_position_bucket(np.arange(5) - 1, 32, 128))


def test_float32_matches_pytorch_and_wan_prompt_embeds(ref):
    cfg, params = umt5_weights.load_text_encoder(FIX, dtype="float32")
    assert all(p.dtype == np.float32 for p in jax.tree_util.tree_leaves(params))
    _close("last_hidden_state float32", _hidden(cfg, params, ref), ref["last_hidden_state"], TOL)
    embeds = jax.jit(lambda p, ids, mask: umt5.encode(cfg, p, ids, mask))(params, ref["input_ids"],
                                                                          ref["attention_mask"])
    _close("Wan prompt_embeds (padding zeroed)", embeds, ref["prompt_embeds"], TOL)
    assert not np.any(np.asarray(embeds)[1, 10:]) and np.all(np.any(np.asarray(embeds)[1, :10], axis=-1))


def test_bfloat16_compute_matches_pytorch_float32(ref):
    cfg, params = umt5_weights.load_text_encoder(FIX)  # the defaults: bfloat16 compute, float32 params
    assert cfg.dtype == "bfloat16" and all(p.dtype == np.float32 for p in jax.tree_util.tree_leaves(params))
    out = _hidden(cfg, params, ref)
    assert out.dtype == np.float32
    _close("last_hidden_state bfloat16 compute", out, ref["last_hidden_state"], BF16_TOL)


def test_scanned_rematerialised_stack_equals_the_loop(ref):
    cfg, looped = umt5_weights.load_text_encoder(FIX, dtype="float32")
    scan_cfg, scanned = umt5_weights.load_text_encoder(FIX, dtype="float32", scan_layers=True, remat="dots")
    stacked = scanned["encoder"][umt5.BLOCKS]["layer_0"]["SelfAttention"]["relative_attention_bias"]["embedding"]
    assert stacked.shape == (2, 8, 4)  # one bias table per layer
    jax.tree_util.tree_map(np.testing.assert_array_equal, umt5.unstack_blocks(scanned), looped)
    assert jax.tree_util.tree_structure(scanned) == jax.tree_util.tree_structure(umt5.abstract_params(scan_cfg))
    _close("scanned + remat vs looped", _hidden(scan_cfg, scanned, ref), _hidden(cfg, looped, ref), 1e-6)


def test_param_count_is_the_closed_form_and_the_checkpoints():
    tiny_cfg, _ = umt5_weights.load_text_encoder(FIX)
    in_file = sum(a.size for a in tensor_files.read(FIX / "text_encoder" / "model.safetensors").values())
    assert umt5.param_count(tiny_cfg) == in_file
    c = umt5.UMT5_XXL
    d, inner = c["d_model"], c["num_heads"] * c["d_kv"]
    per_layer = 4 * d * inner + 3 * d * c["d_ff"] + 2 * d + c["relative_attention_num_buckets"] * c["num_heads"]
    closed = c["vocab_size"] * d + c["num_layers"] * per_layer + d
    xxl = umt5.UMT5Config(**c, scan_layers=True, remat="block")
    n = umt5.param_count(xxl)
    print(f"umT5-XXL encoder: {n:,} parameters")
    assert n == closed
    ids = jax.ShapeDtypeStruct((2, 512), np.int32)  # Wan's 512 text tokens, traced only (nothing allocated)
    out = jax.eval_shape(lambda p, i: umt5.encode(xxl, p, i, i > 0), umt5.abstract_params(xxl), ids)
    assert out.shape == (2, 512, 4096) and out.dtype == np.float32


# ------------------------------------------------------------------------------------------------ weights
def _copy_encoder(tmp_path, state=None, config=None) -> pathlib.Path:
    """A text_encoder/ folder in tmp_path with the fixture's config (or `config`) and tensors (or `state`)."""
    folder = tmp_path / "wan" / umt5_weights.SUBFOLDER
    folder.mkdir(parents=True)
    raw = json.loads((FIX / "text_encoder" / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, **(config or {})}))
    if state is None:
        shutil.copy(FIX / "text_encoder" / "model.safetensors", folder)
    else:
        tensor_files.write(folder / "model.safetensors", state)
    return tmp_path / "wan"


def _state():
    return tensor_files.read(FIX / "text_encoder" / "model.safetensors")


def test_sharded_folder_and_tied_embedding_copy_load_the_same_params(tmp_path):
    _, want = umt5_weights.load_text_encoder(FIX)
    state = _state()
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text((FIX / "text_encoder" / "config.json").read_text())
    names = sorted(state)
    weight_map = {}
    for shard, part in (("model-00001-of-00002.safetensors", names[:9]),
                        ("model-00002-of-00002.safetensors", names[9:])):
        tensor_files.write(folder / shard, {n: state[n] for n in part})
        weight_map.update({n: shard for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _, sharded = umt5_weights.load_text_encoder(folder, "")
    jax.tree_util.tree_map(np.testing.assert_array_equal, sharded, want)
    # writers other than save_pretrained keep the tied encoder.embed_tokens copy, or only it
    both = _copy_encoder(tmp_path / "both", {**state, umt5_weights.TIED: state["shared.weight"]})
    only_tied = {umt5_weights.TIED if k == "shared.weight" else k: v for k, v in state.items()}
    for path in (both, _copy_encoder(tmp_path / "tied", only_tied)):
        jax.tree_util.tree_map(np.testing.assert_array_equal, umt5_weights.load_text_encoder(path)[1], want)
    differ = _copy_encoder(tmp_path / "differ", {**state, umt5_weights.TIED: state["shared.weight"] + 1})
    with pytest.raises(WeightError, match="encoder.embed_tokens.weight differs from shared.weight"):
        umt5_weights.load_text_encoder(differ)


def test_refuses_another_models_folder_in_one_line(tmp_path):
    t5 = _copy_encoder(tmp_path, config={"model_type": "t5", "architectures": ["T5EncoderModel"]})
    with pytest.raises(WeightError, match=r"is a 't5' model \(T5EncoderModel\), not umT5's encoder") as err:
        umt5_weights.load_text_encoder(t5)
    assert "\n" not in str(err.value)
    relu = _copy_encoder(tmp_path / "relu", config={"feed_forward_proj": "relu"})
    with pytest.raises(WeightError, match="feed_forward_proj='relu'"):
        umt5_weights.load_text_encoder(relu)
    with pytest.raises(FileNotFoundError, match="No umT5 text encoder folder"):
        umt5_weights.load_text_encoder(tmp_path / "nowhere")


def test_names_every_missing_unexpected_and_misshaped_tensor(tmp_path):
    # T5's layout: only layer 0 has a relative-position bias; plus a stray tensor and a wrong vocab in config
    state = {k: v for k, v in _state().items() if k != "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"}
    state["encoder.block.0.layer.0.SelfAttention.q.bias"] = np.zeros(32, np.float32)
    with pytest.raises(WeightError) as err:
        umt5_weights.load_text_encoder(_copy_encoder(tmp_path, state, config={"vocab_size": 100}))
    text = str(err.value)
    print(text)
    assert "missing tensor: encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in text
    assert "unexpected tensor: encoder.block.0.layer.0.SelfAttention.q.bias" in text
    assert "shape mismatch: shared.weight: checkpoint (128, 32)" in text and "expects (100, 32)" in text


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="remat='all'"):
        umt5.UMT5Config(**umt5.UMT5_XXL, remat="all")
    with pytest.raises(ConfigError, match="dtype='fp8'"):
        dataclasses.replace(umt5.UMT5Config(**umt5.UMT5_XXL), dtype="fp8")
    with pytest.raises(ConfigError, match="num_heads=0"):
        umt5.UMT5Config(**{**umt5.UMT5_XXL, "num_heads": 0})
