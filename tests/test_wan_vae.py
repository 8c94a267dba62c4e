"""The Flax Wan VAE (amd_jax.models.wan.vae) against diffusers 0.39's PyTorch AutoencoderKLWan, through the
committed fixture of tests/fixtures/wan_vae_tiny (made by tests/fixtures/make_wan_vae_fixtures.py; no torch here):
a tiny random VAE with Wan2.1's structure (4x temporal, 8x spatial), its diffusers folder, a 13-frame video with its
posterior, latents with their decoded videos, and WanPipeline's decode of normalised latents. Also the weight
folder checks, the input checks, and the Wan2.1 VAE's parameter count and 81-frame shapes by eval_shape.
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
from amd_jax.models.wan import vae as wan_vae, vae_weights
from tiny import close_to_reference as _close

FIX = pathlib.Path(__file__).parent / "fixtures" / "wan_vae_tiny"
TOL = 1e-4  # float32 CPU vs float32 PyTorch, as SDXL's VAE test (tests/test_sdxl_models.py); measured 2e-6
# bfloat16 convolutions vs the float32 reference (measured 0.015 encode, 0.038 decode on outputs up to |1.3|);
# the bound of SDXL's UNet bf16 test (tests/test_sdxl_unet_flax.py) and the Wan transformer's.
BF16_TOL = 0.1
WAN21_VAE_PARAMS = 126_892_531  # diffusers' AutoencoderKLWan() (Wan2.1's config), counted on torch's meta device


def _last(a):
    """diffusers' [B, C, F, H, W] -> channels-last [B, F, H, W, C]."""
    return np.asarray(a).transpose(0, 2, 3, 4, 1)


@pytest.fixture(scope="module")
def ref():
    return {k: _last(v) for k, v in np.load(FIX / "reference.npz").items()}


@pytest.fixture(scope="module")
def loaded():
    return vae_weights.load_vae(FIX, dtype="float32")




def _encode_decode(cfg, params, ref):
    model = wan_vae.WanVAE(cfg)

    def run(p, video, z, latents, rng):
        mean, logvar = wan_vae.moments(model, p, video)
        return dict(mean=mean, logvar=logvar, decoded=wan_vae.decode(model, p, z, normalized=False),
                    piped=wan_vae.decode(model, p, latents), normalized=wan_vae.encode(model, p, video),
                    sample=wan_vae.encode(model, p, video, rng=rng, normalized=False))

    return jax.jit(run)(params, ref["video"], ref["z"], ref["latents"], jax.random.PRNGKey(3))


# ------------------------------------------------------------------------------------------------- parity
def test_float32_matches_pytorch(ref, loaded):
    cfg, params = loaded
    assert all(p.dtype == np.float32 for p in jax.tree_util.tree_leaves(params))
    out = _encode_decode(cfg, params, ref)
    assert all(v.dtype == jnp.float32 for v in out.values())
    _close("posterior mean (13 frames -> 4)", out["mean"], ref["posterior_mean"], TOL)
    _close("posterior logvar", out["logvar"], ref["posterior_logvar"], TOL)
    _close("decode (3 latent frames -> 9)", out["decoded"], ref["decoded"], TOL)
    _close("WanPipeline decode of normalised latents", out["piped"], ref["pipeline_decoded"], TOL)
    config = json.loads((FIX / "vae" / "config.json").read_text())
    mean, std = np.array(config["latents_mean"]), np.array(config["latents_std"])
    _close("encode, normalised", out["normalized"], (ref["posterior_mean"] - mean) / std, TOL)
    eps = jax.random.normal(jax.random.PRNGKey(3), out["mean"].shape)
    _close("encode, posterior sample", out["sample"], out["mean"] + np.exp(0.5 * out["logvar"]) * eps, 1e-5)


def test_decoding_a_latent_prefix_gives_the_videos_first_frames(ref, loaded):
    """The VAE is causal: the first k latent frames decode to the first 4k - 3 frames of the whole video (what the
    Wan reward's reward.latent_frames relies on), checked against PyTorch's decode of all 3 latent frames."""
    cfg, params = loaded
    model = wan_vae.WanVAE(cfg)
    for k in (1, 2):
        prefix = jax.jit(lambda p, z: wan_vae.decode(model, p, z))(params, ref["latents"][:, :k])
        assert prefix.shape[1] == 4 * k - 3
        _close(f"decode of the first {k} latent frames", prefix, ref["pipeline_decoded"][:, :4 * k - 3], TOL)


def test_bf16_compute_stays_near_float32(ref, loaded):
    cfg, params = loaded
    model = wan_vae.WanVAE(dataclasses.replace(cfg, dtype="bfloat16"))
    mean, decoded = jax.jit(lambda p, v, z: (wan_vae.moments(model, p, v)[0],
                                             wan_vae.decode(model, p, z, normalized=False)))(
        params, ref["video"], ref["z"])
    assert mean.dtype == decoded.dtype == jnp.float32
    diffs = [_close("bf16 posterior mean", mean, ref["posterior_mean"], BF16_TOL),
             _close("bf16 decode", decoded, ref["decoded"], BF16_TOL)]
    assert min(diffs) > 1e-4  # it did compute in bfloat16


# ------------------------------------------------------------------------------------------------ weights
def _copy(tmp_path) -> pathlib.Path:
    dst = tmp_path / "vae"
    shutil.copytree(FIX / "vae", dst)
    return dst


def test_model_folder_or_vae_subfolder_load_the_same(tmp_path, loaded):
    folder = _copy(tmp_path)
    for path in (tmp_path, folder):
        cfg, params = vae_weights.load_vae(path, dtype="float32")
        assert cfg == loaded[0] and cfg.temporal_factor == 4 and cfg.spatial_factor == 8
        for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded[1]), strict=True):
            np.testing.assert_array_equal(a, b)


def test_refuses_another_models_folder_in_one_line(tmp_path):
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_class_name": "AutoencoderKL"}))
    with pytest.raises(ConfigError, match="is a AutoencoderKL, not an AutoencoderKLWan") as e:
        vae_weights.load_vae(folder)
    assert "\n" not in str(e.value)
    (folder / "config.json").write_text(json.dumps({**config, "is_residual": True, "patch_size": 2}))
    with pytest.raises(ConfigError, match="Wan2.2"):
        vae_weights.load_vae(folder)


def test_names_every_missing_extra_and_misshaped_tensor(tmp_path):
    folder = _copy(tmp_path)
    f = folder / "diffusion_pytorch_model.safetensors"
    state = dict(safetensors.numpy.load_file(f))
    del state["decoder.mid_block.attentions.0.norm.gamma"]
    state["encoder.head.0.gamma"] = np.ones((12, 1, 1, 1), np.float32)
    state["quant_conv.weight"] = np.zeros((8, 8, 1, 1), np.float32)
    safetensors.numpy.save_file(state, f)
    with pytest.raises(WeightError) as e:
        vae_weights.load_vae(folder)
    text = str(e.value)
    print(text)
    assert "\n" not in text and "(3 problems)" in text
    for part in ("decoder.mid_block.attentions.0.norm.gamma", "encoder.head.0.gamma",
                 "quant_conv.weight checkpoint (8, 8, 1, 1) model (8, 8, 1, 1, 1)"):
        assert part in text


# ------------------------------------------------------------------------------------------ inputs, counts
def test_videos_and_latents_that_do_not_fit_are_refused_in_one_line(loaded):
    cfg, params = loaded
    model = wan_vae.WanVAE(cfg)
    with pytest.raises(ConfigError, match="frames must be 4k\\+1"):
        wan_vae.moments(model, params, np.zeros((1, 12, 32, 32, 3), np.float32))
    with pytest.raises(ConfigError, match="multiples of 8"):
        wan_vae.moments(model, params, np.zeros((1, 5, 32, 36, 3), np.float32))
    with pytest.raises(ConfigError, match="channels last"):
        wan_vae.decode(model, params, np.zeros((1, 4, 3, 4, 6), np.float32))  # [B, C, F, H, W]


def test_wan21_vae_parameter_count_and_81_frame_shapes_by_eval_shape():
    """Wan2.1's VAE (base_dim 96, z_dim 16, dim_mult (1, 2, 4, 4)): diffusers' own parameter count; 21 latent
    frames of 60x104 decode to 81 frames of 480x832, and back."""
    cfg = wan_vae.WanVAEConfig()
    assert wan_vae.param_count(cfg) == WAN21_VAE_PARAMS
    model = wan_vae.WanVAE(cfg)
    params = wan_vae.abstract_params(cfg)
    assert params["decoder"]["up_blocks_0"]["upsamplers_0"]["time_conv"]["kernel"].shape == (3, 1, 1, 384, 768)
    video = jax.eval_shape(lambda p, z: wan_vae.decode(model, p, z), params,
                           jax.ShapeDtypeStruct((1, 21, 60, 104, 16), jnp.float32))
    assert video.shape == (1, 81, 480, 832, 3) and video.dtype == jnp.float32
    latents = jax.eval_shape(lambda p, v: wan_vae.encode(model, p, v), params, video)
    assert latents.shape == (1, 21, 60, 104, 16)
