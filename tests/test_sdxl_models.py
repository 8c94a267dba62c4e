"""SDXL model stack vs PyTorch diffusers/transformers, through committed fixtures (no torch needed here).

tests/fixtures/sdxl_tiny is a tiny random SDXL-architecture model set in diffusers layout with PyTorch outputs on
fixed inputs (made by tests/fixtures/make_sdxl_fixtures.py). Every comparison prints its max abs difference.
"""

from __future__ import annotations

import functools
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax.traverse_util import flatten_dict, unflatten_dict

from amd_jax.models.common import hf_folders
from amd_jax.models.common.params import cast_params
from amd_jax.models.sdxl import text, unet, weights
from amd_jax.models.vae import autoencoder as vae
from amd_jax.models.vae import weights as vae_weights
from amd_jax.tasks.sdxl import arch

FIX = pathlib.Path(__file__).parent / "fixtures" / "sdxl_tiny"
TOL = 1e-4  # float32 CPU vs float32 PyTorch on O(1)-O(10) activations


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "reference.npz"))


@pytest.fixture(scope="module")
def tiny_unet():
    return weights.load_unet(FIX)


@pytest.fixture(scope="module")
def plain_apply(tiny_unet):
    """The jitted Denoiser apply_fn of the tiny UNet (shared: one compile for several tests)."""
    return jax.jit(unet.make_denoiser(tiny_unet[0]).apply_fn)


def _cond(ref):
    return {k: jnp.asarray(ref[k]) for k in unet.COND_KEYS}


def _close(name, got, want, tol=TOL):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    diff = float(np.max(np.abs(got - want)))
    print(f"{name}: max abs diff {diff:.2e} (max |ref| {np.max(np.abs(want)):.2f})")
    assert diff < tol, f"{name}: max abs diff {diff} >= {tol}"


def _import_fixture_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sdxl_fixtures", FIX.parent / "make_sdxl_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------- parity
def test_unet_matches_pytorch_and_is_a_denoiser(ref, tiny_unet, plain_apply):
    module, params = tiny_unet
    assert all(p.dtype == np.float32 for p in jax.tree_util.tree_leaves(params))  # fp16 file -> float32
    den = unet.make_denoiser(module)
    out, mid = jax.jit(den.x0_and_features)(params, ref["x"], ref["t"], _cond(ref))
    out = (ref["x"] - _alpha(den, ref["t"]) * out) / _sigma(den, ref["t"])  # x0 -> eps: checks Denoiser.x0 too
    assert out.dtype == jnp.float32 and mid.dtype == jnp.float32
    _close("unet (eps from Denoiser.x0)", out, ref["unet_out"])
    _close("unet mid-block (NHWC)", mid, ref["unet_mid"].transpose(0, 2, 3, 1))

    def variants(p):  # one compile: diffusers' tanh-GELU, and bf16-stored params
        apply = functools.partial(unet.unet_apply, module, x_t=ref["x"], t=ref["t"], cond=_cond(ref))
        return apply(p, exact_gelu=False), apply(cast_params(p, jnp.bfloat16))

    plain = plain_apply(params, ref["x"], ref["t"], _cond(ref))
    approx, bf16 = jax.jit(variants)(params)
    _close("unet", plain, ref["unet_out"])
    # diffusers' Flax GEGLU alone (tanh-approximate GELU) is measurably off PyTorch's exact GELU.
    print(f"unet with diffusers' tanh-GELU: max abs diff {np.max(np.abs(approx - ref['unet_out'])):.2e}")
    assert np.max(np.abs(approx - ref["unet_out"])) > 2 * np.max(np.abs(plain - ref["unet_out"]))
    # Frozen bf16 teacher: params stored in bf16, computation and outputs in float32.
    assert bf16.dtype == jnp.float32 and plain.dtype == jnp.float32
    assert 0 < float(jnp.max(jnp.abs(bf16 - plain))) < 0.1


def _alpha(den, t):
    return np.sqrt(den.schedule.alphas_cumprod()[t])[:, None, None, None]


def _sigma(den, t):
    return np.sqrt(1 - den.schedule.alphas_cumprod()[t])[:, None, None, None]


def test_null_cond_zeroes_text_keeps_time_ids(ref):
    cond = _cond(ref)
    null = unet.null_cond(cond)
    assert not np.any(np.asarray(null["prompt_embeds"])) and not np.any(np.asarray(null["text_embeds"]))
    np.testing.assert_array_equal(null["time_ids"], cond["time_ids"])
    assert null["prompt_embeds"].shape == cond["prompt_embeds"].shape


def test_unet_input_errors(ref, tiny_unet):
    module, params = tiny_unet
    with pytest.raises(KeyError, match="time_ids"):
        unet.unet_apply(module, params, ref["x"], ref["t"], {k: ref[k] for k in ("prompt_embeds", "text_embeds")})
    with pytest.raises(ValueError, match="NCHW"):
        unet.unet_apply(module, params, ref["x"].transpose(0, 2, 3, 1), ref["t"], _cond(ref))


def test_vae_matches_pytorch(ref):
    module, params = vae_weights.load_vae(FIX)
    assert module.scaling_factor == pytest.approx(vae.SDXL_SCALING_FACTOR)
    dec, enc = jax.jit(lambda p: (vae.decode(module, p, ref["latents"]), vae.encode(module, p, ref["images"])))(
        params)
    # decode clips to [-1, 1] (the raw PyTorch decoder output of this random VAE reaches ~3).
    assert np.abs(ref["vae_decoded"]).max() > 1
    _close("vae decode (clipped)", dec, np.clip(ref["vae_decoded"], -1, 1))
    assert enc.dtype == jnp.float32 and dec.dtype == jnp.float32
    _close("vae encode (posterior mean x scaling)", enc, ref["vae_encoded_mean"])


def test_text_encoders_match_pytorch(ref):
    enc = text.SDXLTextEncoders.load(FIX)
    prompts = json.loads((FIX / "export_check.json").read_text())["prompts"]
    ids, ids_2 = enc.tokenize(prompts)
    np.testing.assert_array_equal(ids, ref["ids"])
    np.testing.assert_array_equal(ids_2, ref["ids_2"])
    assert ids[0, -1] != ids_2[0, -1]  # the two tokenizers pad differently (<|endoftext|> vs "!")
    embeds, pooled = enc(prompts)  # tokenize + jitted encode_ids, the same outputs as encode_prompt
    assert embeds.dtype == jnp.float32 and pooled.dtype == jnp.float32
    d1 = enc.encoder.config.hidden_size
    _close("text_encoder (CLIP-L) penultimate", embeds[..., :d1], ref["encode_prompt_embeds"][..., :d1])
    _close("text_encoder_2 (bigG) penultimate", embeds[..., d1:], ref["encode_prompt_embeds"][..., d1:])
    _close("text_encoder_2 pooled projection", pooled, ref["te2_pooled"])
    _close("encode_prompt prompt_embeds", embeds, ref["encode_prompt_embeds"])
    _close("encode_prompt pooled", pooled, ref["encode_prompt_pooled"])
    tid = text.time_ids(2, original_size=(768, 1024), crop_top_left=(16, 32), target_size=(1024, 1024))
    np.testing.assert_array_equal(tid, np.repeat(ref["time_ids_pipeline"], 2, axis=0))
    per_sample = text.time_ids(2, original_size=ref["time_ids"][:, :2], crop_top_left=ref["time_ids"][:, 2:4])
    np.testing.assert_array_equal(per_sample, ref["time_ids"])


# ------------------------------------------------------------------------------------------- export
def test_export_names_match_the_pytorch_checkpoint(tiny_unet):
    """Our Flax->PyTorch export reproduces the original PyTorch file's names, layouts and values."""
    _, params = tiny_unet
    exported = weights.unet_state_dict_pytorch(params)
    original = safetensors.numpy.load_file(str(FIX / "unet" / "diffusion_pytorch_model.safetensors"))
    assert sorted(exported) == sorted(original)
    for name, arr in original.items():
        np.testing.assert_array_equal(exported[name], arr.astype(np.float32), err_msg=name)


def test_export_round_trip_and_pytorch_load(ref, tiny_unet, plain_apply, tmp_path):
    module, params = tiny_unet
    fx = _import_fixture_script()
    perturbed = unflatten_dict(fx.perturb(flatten_dict(params)))
    unet_dir = weights.save_unet_pytorch(tmp_path, perturbed, module)
    assert (unet_dir / "diffusion_pytorch_model.safetensors").is_file()
    module2, params2 = weights.load_unet(tmp_path)
    assert module2 == module
    flat, flat2 = flatten_dict(perturbed), flatten_dict(params2)
    assert flat.keys() == flat2.keys()
    for k in flat:
        np.testing.assert_array_equal(flat2[k], flat[k], err_msg="/".join(k))
    out = plain_apply(params2, ref["x"], ref["t"], _cond(ref))  # module2 == module: same network
    np.testing.assert_array_equal(out, plain_apply(perturbed, ref["x"], ref["t"], _cond(ref)))
    # The fixture script loaded the same export with PyTorch diffusers (strict: nothing missing/unexpected).
    record = json.loads((FIX / "export_check.json").read_text())["export_check"]
    assert record["loaded_by"] == "diffusers.UNet2DConditionModel.from_pretrained"
    assert all(not v for v in record["loading_info"].values()), record["loading_info"]
    assert record["num_params"] == sum(p.size for p in jax.tree_util.tree_leaves(params))
    _close("exported UNet: PyTorch from_pretrained vs Flax", out, ref["export_unet_out"])
    assert np.max(np.abs(ref["export_unet_out"] - ref["unet_out"])) > 1e-2  # the perturbation mattered


def test_gs_style_staging(tmp_path):
    from etils import epath

    staged = hf_folders.stage(epath.Path(FIX), ("unet", "tokenizer", "no_such_subfolder"))
    try:
        assert sorted(p.name for p in (staged / "unet").iterdir()) == sorted(p.name for p in (FIX / "unet").iterdir())
        assert (staged / "tokenizer" / "vocab.json").read_bytes() == (FIX / "tokenizer" / "vocab.json").read_bytes()
        assert not (staged / "no_such_subfolder").exists()
    finally:
        shutil.rmtree(staged)


# -------------------------------------------------------------------------------------- bad inputs
def _copy_component(tmp_path, sub, state=None):
    dst = tmp_path / sub
    shutil.copytree(FIX / sub, dst)
    if state is not None:
        f = dst / ("model.safetensors" if sub.startswith("text") else "diffusion_pytorch_model.safetensors")
        safetensors.numpy.save_file(state, str(f))
    return dst


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        weights.load_unet(tmp_path / "nope")
    dst = _copy_component(tmp_path, "unet")
    (dst / "diffusion_pytorch_model.safetensors").rename(dst / "diffusion_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"diffusion_pytorch_model\.safetensors.*\.bin"):
        weights.load_unet(tmp_path)
    (dst / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        weights.load_unet(tmp_path)


def test_missing_unexpected_and_misshaped_tensors_are_named(tmp_path):
    orig = safetensors.numpy.load_file(str(FIX / "unet" / "diffusion_pytorch_model.safetensors"))
    gone = "up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_k.weight"
    bad = "down_blocks.1.resnets.0.conv1.weight"
    state = {k: v for k, v in orig.items() if k != gone}
    state[bad] = state[bad][:, :-1]
    state["mid_block.extra.weight"] = np.zeros(3, np.float16)
    _copy_component(tmp_path, "unet", state)
    with pytest.raises(weights.WeightError) as e:
        weights.load_unet(tmp_path)
    msg = str(e.value)
    assert f"missing tensor: {gone} (Flax up_blocks_0/attentions_1/transformer_blocks_1/attn2/to_k/kernel)" in msg
    assert f"shape mismatch: {bad}: checkpoint (64, 31, 3, 3)" in msg
    assert "unexpected tensor: mid_block.extra.weight" in msg
    print(msg)

    te = safetensors.numpy.load_file(str(FIX / "text_encoder_2" / "model.safetensors"))
    te["text_projection.weight"] = te["text_projection.weight"][:-1]
    _copy_component(tmp_path, "text_encoder_2", te)
    with pytest.raises(weights.WeightError, match=r"text_projection\.weight: checkpoint \(63, 64\)"):
        weights.load_text_encoder(tmp_path, "text_encoder_2")
    te = safetensors.numpy.load_file(str(FIX / "text_encoder" / "model.safetensors"))
    del te["text_model.encoder.layers.1.mlp.fc2.bias"]
    _copy_component(tmp_path, "text_encoder", te)
    with pytest.raises(weights.WeightError, match=r"missing tensor: text_model\.encoder\.layers\.1\.mlp\.fc2\.bias"):
        weights.load_text_encoder(tmp_path, "text_encoder")


def test_variant_sharded_and_bf16_loading(tmp_path, tiny_unet):
    _, params = tiny_unet
    flat = flatten_dict(params)
    dst = _copy_component(tmp_path, "unet")
    state = safetensors.numpy.load_file(str(dst / "diffusion_pytorch_model.safetensors"))
    (dst / "diffusion_pytorch_model.safetensors").rename(dst / "diffusion_pytorch_model.fp16.safetensors")
    _, p16 = weights.load_unet(tmp_path, variant="fp16", param_dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree_util.tree_leaves(p16))
    (dst / "diffusion_pytorch_model.fp16.safetensors").unlink()
    names = sorted(state)
    shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    for f, keys in shards.items():
        safetensors.numpy.save_file({k: state[k] for k in keys}, str(dst / f))
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (dst / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    _, sharded = weights.load_unet(tmp_path)
    for k, v in flatten_dict(sharded).items():
        np.testing.assert_array_equal(v, flat[k])


def test_unsupported_unet_config_is_rejected():
    cfg = weights.read_config(FIX, "unet")
    with pytest.raises(ValueError, match="norm_num_groups"):
        weights.unet_from_config({**cfg, "norm_num_groups": 16})


# ------------------------------------------------------------------------------------- full size
SDXL_BASE_UNET_CONFIG = arch.SDXL_BASE_UNET  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json


def test_full_sdxl_base_unet_parameter_count():
    """Shapes only (one abstract trace of init + forward): 2,567,463,684 params; mid-block 1280 ch at 1/4 size."""
    module = weights.unet_from_config(SDXL_BASE_UNET_CONFIG)
    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    (out, params), inter = jax.eval_shape(
        lambda r, x, c, te, ti: _split(module.init_with_output(
            r, x, jnp.array([999]), c, {"text_embeds": te, "time_ids": ti}, return_dict=False,
            capture_intermediates=unet.is_mid_block)),
        jax.random.PRNGKey(0), f32((1, 4, 128, 128)), f32((1, 77, 2048)), f32((1, 1280)), f32((1, 6)))
    assert sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(params)) == 2_567_463_684
    assert out[0].shape == (1, 4, 128, 128)
    assert inter["mid_block"]["__call__"][0].shape == (1, 32, 32, 1280)


def _split(out_and_vars):
    out, variables = out_and_vars
    return (out, variables["params"]), variables["intermediates"]


def test_cond_uncond_pair_is_one_call_equal_to_two(ref, tiny_unet):
    """Denoiser.x0_cond_uncond (the real teacher's CFG pair on a doubled, row-interleaved batch) gives each row's
    conditional and unconditional x0 of two separate calls; keys the UNet does not read (reward tokens) are ignored."""
    module, params = tiny_unet
    den = unet.make_denoiser(module)
    cond = {**_cond(ref), "reward_tokens": jnp.ones((2, 5), jnp.int32)}
    x, t = jnp.asarray(ref["x"]), jnp.asarray(ref["t"])
    pair = jax.jit(den.x0_cond_uncond)(params, x, t, cond)
    two = jax.jit(lambda p: (den.x0(p, x, t, cond), den.x0(p, x, t, den.null_cond(cond))))(params)
    for name, got, want in zip(("cond", "uncond"), pair, two):
        _close(f"x0 {name}: batched pair vs separate call", got, want, tol=1e-5)
    assert np.max(np.abs(np.asarray(pair[0]) - np.asarray(pair[1]))) > 1e-3  # the two branches really differ
