"""The Flax Wan transformer (amd_jax.models.wan) against diffusers 0.39's PyTorch WanTransformer3DModel, through
the committed fixtures of tests/fixtures/wan_tiny (made by tests/fixtures/make_wan_fixtures.py; no torch here):
two tiny random models (patch 1x2x2 with cross_attn_norm, 2 layers; patch 2x2x2 without, 1 layer), their
diffusers folders, inputs and PyTorch float32 outputs and last-block features. Also the weight folder checks, the
export round trip, the remat knob, and the Wan2.1-T2V-1.3B parameter count by eval_shape.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from amd_jax.errors import ConfigError
from amd_jax.models.common.hf_folders import WeightError
from amd_jax.models.wan import transformer as wan, weights
from tiny import close_to_reference as _close

FIX = pathlib.Path(__file__).parent / "fixtures" / "wan_tiny"
MODELS = {"": "transformer", "p222_": "transformer_p222"}  # reference.npz prefix -> folder
TOL = 1e-4  # float32 CPU vs float32 PyTorch, outputs up to |4.6| (measured 9e-6), as SiT's / SDXL's 1e-4
# bfloat16 matmuls vs the float32 reference (measured 0.022); SDXL's UNet test allows < 0.1, SiT's 0.15.
BF16_TOL = 0.1
WAN21_1_3B_PARAMS = 1_418_996_800  # diffusers' WanTransformer3DModel of that config, counted on torch's meta device


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "reference.npz"))


@pytest.fixture(scope="module")
def loaded():
    return {prefix: weights.load_transformer(FIX / folder, dtype="float32") for prefix, folder in MODELS.items()}


def _inputs(ref, prefix):
    """(channels-last latents, timestep, text) of a fixture model."""
    return ref[prefix + "latents"].transpose(0, 2, 3, 4, 1), ref[prefix + "timestep"], ref[prefix + "text"]


def _forward(cfg, params, ref, prefix, features=True):
    fn = jax.jit(lambda p, *a: wan.WanTransformer(cfg).apply({"params": p}, *a, features=features))
    return fn(params, *_inputs(ref, prefix))




# ------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("prefix", list(MODELS))
def test_float32_matches_pytorch(ref, loaded, prefix):
    cfg, params = loaded[prefix]
    assert all(p.dtype == np.float32 for p in jax.tree_util.tree_leaves(params))
    out, feats = _forward(cfg, params, ref, prefix)
    assert out.dtype == feats.dtype == jnp.float32
    _close(f"{MODELS[prefix]} output", out, ref[prefix + "out"].transpose(0, 2, 3, 4, 1), TOL)
    _close(f"{MODELS[prefix]} last-block features", feats, ref[prefix + "features"], TOL)


@pytest.mark.parametrize("prefix", list(MODELS))
def test_bf16_compute_stays_near_float32(ref, loaded, prefix):
    cfg, params = loaded[prefix]
    out = _forward(dataclasses.replace(cfg, dtype="bfloat16"), params, ref, prefix, features=False)
    assert out.dtype == jnp.float32
    diff = _close(f"{MODELS[prefix]} bf16 compute", out, ref[prefix + "out"].transpose(0, 2, 3, 4, 1), BF16_TOL)
    assert diff > 1e-4  # it did compute in bfloat16


def test_remat_keeps_outputs_and_gradients(ref, loaded):
    cfg, params = loaded[""]
    lat, t, text = _inputs(ref, "")

    def grads(policy):
        model = wan.WanTransformer(dataclasses.replace(cfg, remat=policy))
        return jax.jit(jax.grad(lambda p: jnp.mean(model.apply({"params": p}, lat, t, text) ** 2)))(params)

    plain = grads("none")
    scale = max(float(np.max(np.abs(g))) for g in jax.tree_util.tree_leaves(plain))
    for policy in ("block", "dots"):
        diff = max(float(np.max(np.abs(a - b))) for a, b in
                   zip(jax.tree_util.tree_leaves(grads(policy)), jax.tree_util.tree_leaves(plain), strict=True))
        print(f"remat={policy}: max gradient diff {diff:.2e} (max |grad| {scale:.2e})")
        assert diff <= 1e-5 * scale


# ------------------------------------------------------------------------------------------------- rotary
def test_rotary_split_and_tables_follow_wan():
    """head_dim 128 -> (44, 42, 42) frames/height/width channels (Wan2.1's split); each token's angles are its
    frame, row and column index times theta^(-2k/dim) of its own axis' dim, in that channel order."""
    assert wan.WanConfig(**wan.WAN21_T2V_1_3B).rope_split == (44, 42, 42)
    cfg = wan.WanConfig(attention_head_dim=16, num_attention_heads=1)
    assert cfg.rope_split == (8, 4, 4)
    cos, sin = wan.rope_3d(cfg, (3, 4, 5))
    token = (2 * 4 + 1) * 5 + 3  # frame 2, row 1, column 3
    angles = np.concatenate([pos * 1e4 ** (-np.arange(0, dim, 2) / dim) for pos, dim in ((2, 8), (1, 4), (3, 4))])
    np.testing.assert_allclose(cos[token], np.cos(angles), atol=1e-6)
    np.testing.assert_allclose(sin[token], np.sin(angles), atol=1e-6)


def test_apply_rope_rotates_adjacent_pairs():
    x = np.random.default_rng(0).normal(size=(1, 2, 1, 4)).astype(np.float32)
    angle = np.array([[0.3, 1.1], [-0.7, 2.0]], np.float32)
    got = np.asarray(wan.apply_rope(jnp.asarray(x), jnp.cos(angle), jnp.sin(angle)))
    for n in range(2):
        for k in range(2):
            c, s = np.cos(angle[n, k]), np.sin(angle[n, k])
            a, b = x[0, n, 0, 2 * k], x[0, n, 0, 2 * k + 1]
            np.testing.assert_allclose(got[0, n, 0, 2 * k:2 * k + 2], [a * c - b * s, a * s + b * c], atol=1e-6)


# ------------------------------------------------------------------------------------------------ weights
def _copy(tmp_path, folder="transformer") -> pathlib.Path:
    dst = tmp_path / "transformer"
    shutil.copytree(FIX / folder, dst)
    return dst


def _edit_state(folder: pathlib.Path, edit) -> None:
    f = folder / "diffusion_pytorch_model.safetensors"
    state = dict(safetensors.numpy.load_file(f))
    edit(state)
    safetensors.numpy.save_file(state, f)


def test_model_folder_or_transformer_subfolder_load_the_same(tmp_path, loaded):
    _copy(tmp_path)
    cfg, params = weights.load_transformer(tmp_path, dtype="float32")
    assert cfg == loaded[""][0]
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded[""][1]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_refuses_another_models_folder_in_one_line(tmp_path):
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ConfigError, match="is a UNet2DConditionModel, not a WanTransformer3DModel") as e:
        weights.load_transformer(folder)
    assert "\n" not in str(e.value)
    (folder / "config.json").write_text(json.dumps({**config, "image_dim": 1280, "added_kv_proj_dim": 5120}))
    with pytest.raises(ConfigError, match="image-to-video"):
        weights.load_transformer(folder)


def test_names_every_missing_extra_and_misshaped_tensor(tmp_path):
    folder = _copy(tmp_path)

    def damage(state):
        del state["blocks.1.attn1.norm_q.weight"]
        state["blocks.0.attn2.add_k_proj.weight"] = np.zeros((32, 32), np.float32)
        state["proj_out.weight"] = np.zeros((8, 32), np.float32)

    _edit_state(folder, damage)
    with pytest.raises(WeightError) as e:
        weights.load_transformer(folder)
    text = str(e.value)
    print(text)
    assert "\n" not in text and "(3 problems)" in text
    for part in ("blocks.1.attn1.norm_q.weight", "blocks.0.attn2.add_k_proj.weight",
                 "proj_out.weight checkpoint (8, 32) model (16, 32)"):
        assert part in text


def test_config_of_another_size_is_refused(tmp_path):
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_layers": 3, "ffn_dim": 48}))
    with pytest.raises(WeightError, match=r"missing \d+ tensors \['blocks.2.") as e:
        weights.load_transformer(folder)
    assert "mis-shaped" in str(e.value) and "blocks.0.ffn.net.0.proj.weight checkpoint (64, 32) model (48, 32)" \
        in str(e.value)


@pytest.mark.parametrize("folder", list(MODELS.values()))
def test_export_round_trip_is_the_diffusers_folder(tmp_path, folder):
    cfg, params = weights.load_transformer(FIX / folder)
    out = weights.save_transformer(tmp_path / "out", params, cfg)
    original = safetensors.numpy.load_file(FIX / folder / "diffusion_pytorch_model.safetensors")
    exported = safetensors.numpy.load_file(out / "diffusion_pytorch_model.safetensors")
    assert sorted(exported) == sorted(original)
    for name in original:
        np.testing.assert_array_equal(exported[name], original[name], err_msg=name)
    theirs = json.loads((FIX / folder / "config.json").read_text())
    ours = json.loads((out / "config.json").read_text())
    assert {k: v for k, v in ours.items() if k != "_diffusers_version"} == \
        {k: v for k, v in theirs.items() if k != "_diffusers_version"}
    assert weights.load_transformer(out)[0] == cfg


# ------------------------------------------------------------------------------------------ inputs, counts
def test_latents_that_do_not_fit_are_refused_in_one_line(loaded):
    cfg, params = loaded["p222_"]
    model = wan.WanTransformer(cfg)
    with pytest.raises(ConfigError, match=r"not multiples of patch_size=\(2, 2, 2\)"):
        model.apply({"params": params}, jnp.zeros((1, 3, 4, 6, 4)), jnp.zeros(1), jnp.zeros((1, 5, 24)))
    with pytest.raises(ConfigError, match="channels last"):
        model.apply({"params": params}, jnp.zeros((1, 4, 4, 4, 6)), jnp.zeros(1), jnp.zeros((1, 5, 24)))


def test_wan21_t2v_1_3b_parameter_count_by_eval_shape():
    """30 layers of width 1536 (12 x 128), ffn 8960, text 4096: diffusers' own count of that config."""
    assert wan.param_count() == WAN21_1_3B_PARAMS
    shapes = wan.abstract_params(wan.WanConfig(**wan.WAN21_T2V_1_3B))
    assert shapes["blocks"]["attn1"]["to_q"]["kernel"].shape == (30, 1536, 1536)
    assert shapes["patch_embedding"]["kernel"].shape == (1, 2, 2, 16, 1536)
