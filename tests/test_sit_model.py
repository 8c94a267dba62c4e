"""SiT/DiT Flax backbone vs PyTorch, its initialisation, parameter count, and the checkpoint converter.

tests/fixtures/sit_tiny is a tiny random DiT (2 blocks, width 64, 4 heads, patch 2, 8x8x4 latents, 10 classes,
learn_sigma) in SiT's checkpoint naming with diffusers' PyTorch DiTTransformer2DModel outputs on fixed inputs
(made by tests/fixtures/make_sit_fixtures.py, which also ran the converter on torch .pt files). Every comparison
prints its max abs difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from amd_jax.errors import ConfigError, DamagedFileError
from amd_jax.models.sit import denoiser as sit_denoiser, network as sit, weights as sit_weights
from amd_jax.tools import convert_sit as sit_convert
from tiny import close_to_reference as _close

FIX = pathlib.Path(__file__).parent / "fixtures" / "sit_tiny"
TOL = 1e-4  # float32 CPU vs float32 PyTorch on O(1)-O(10) activations (measured ~2e-6)
BF16_TOL = 0.15  # bfloat16 matmuls (8-bit mantissa) on outputs up to |5|; measured ~0.035
ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "reference.npz"))


@pytest.fixture(scope="module")
def tiny():
    return sit_weights.load_sit(FIX, dtype="float32")




# ------------------------------------------------------------------------------------------------- parity
def test_matches_pytorch_dit_and_denoiser_convention(ref, tiny):
    cfg, params = tiny
    assert all(p.dtype == np.float32 for p in jax.tree_util.tree_leaves(params))
    apply = jax.jit(sit_denoiser.denoiser_apply(cfg), static_argnames="features")
    t = 1.0 - ref["t_sit"]  # the project's RectifiedFlow time of SiT's t
    u, feats = apply(params, ref["x"], t, {"label": ref["labels"]}, features=True)
    # SiT's velocity is the first in_channels of the learn_sigma output; the project's velocity is its negative.
    _close("velocity (-u) vs PyTorch DiT", -u, ref["out"][..., :cfg.in_channels], TOL)
    _close("last-block features [B, N, D]", feats, ref["features"], TOL)
    bf16 = dataclasses.replace(cfg, dtype="bfloat16", attention_impl="xla")
    _close("bfloat16 compute", -jax.jit(sit_denoiser.denoiser_apply(bf16))(params, ref["x"], t, {"label": ref["labels"]}),
           ref["out"][..., :cfg.in_channels], BF16_TOL)


def test_fixture_is_the_converters_output():
    report = json.loads((FIX / "reference.json").read_text())
    assert hashlib.sha256((FIX / sit_weights.WEIGHTS_FILE).read_bytes()).hexdigest() == report["model_sha256"]
    assert {"bare", "diffusers", "model_only", "train_py"} <= set(report["identical_outputs"])
    # what the fixture script found with torch: SiT train.py's pickle (argparse.Namespace as 'args') converted to
    # the same bytes, and a pickle with any other class was refused
    assert report["train_py_args_namespace_converts"] is True and report["refused_other_class_pickle"] is True
    # the pickles with classes (SiT train.py's argparse.Namespace allowed, any other refused) are checked with
    # torch by test_convert_reads_sit_train_py_checkpoint_* / test_convert_refuses_a_train_py_checkpoint_* below


# ---------------------------------------------------------------------------------------------- structure
def test_fresh_init_is_sits_zero_model_and_maps_to_sit_names():
    cfg = sit.SiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4,
                        num_classes=10, dtype="float32")
    params = sit.init_params(cfg, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 4))
    out = sit.SiT(cfg).apply({"params": params}, x, jnp.array([0.2, 0.9]), jnp.array([1, 10]))
    assert out.shape == x.shape and float(jnp.max(jnp.abs(out))) == 0.0  # adaLN-Zero + zero final layer
    state = sit_weights.state_from_params(params, cfg)
    assert {k: v.shape for k, v in state.items()} == sit_weights.expected_shapes(cfg)
    zero = [k for k in state if "adaLN_modulation" in k or k.startswith("final_layer.linear") or k.endswith("bias")]
    assert zero and all(not np.any(state[k]) for k in zero)
    for name in ("y_embedder.embedding_table.weight", "t_embedder.mlp.0.weight", "t_embedder.mlp.2.weight"):
        assert abs(float(np.std(state[name])) - 0.02) < 0.002, name  # normal(0.02)
    for name in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight", "x_embedder.proj.weight"):
        w = state[name].reshape(state[name].shape[0], -1)  # torch view [out, in] (conv: [D, C*p*p])
        limit = np.sqrt(6.0 / sum(w.shape))  # xavier uniform
        assert np.max(np.abs(w)) <= limit and abs(np.std(w) - limit / np.sqrt(3)) < 0.1 * limit, name
    back = sit_weights.params_from_state(state, cfg)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, back, jax.device_get(params)))


def test_xl2_parameter_count_is_published():
    cfg = sit.SiTConfig(input_size=32, in_channels=4, **sit.SIZES["XL/2"])
    # SiT-XL/2 and DiT-XL/2 (256x256): 675,129,632 parameters as PyTorch counts them, frozen pos_embed included.
    assert sit.param_count(cfg, include_pos_embed=True) == 675_129_632
    assert sit.param_count(cfg) == 675_129_632 - 256 * 1152
    assert sum(int(np.prod(s)) for s in sit_weights.expected_shapes(cfg).values()) == 675_129_632
    assert sit.SIZES == {"S/2": dict(depth=12, hidden_size=384, num_heads=6, patch_size=2),
                         "B/2": dict(depth=12, hidden_size=768, num_heads=12, patch_size=2),
                         "L/2": dict(depth=24, hidden_size=1024, num_heads=16, patch_size=2),
                         "XL/2": dict(depth=28, hidden_size=1152, num_heads=16, patch_size=2)}
    assert sit.size_config("SiT-L/4")["patch_size"] == 4


def test_pos_embed_matches_mae_layout():
    """Row r = h * grid + w; channels [sin(w), cos(w) | sin(h), cos(h)] at frequencies 10000**(-k/(D/4))."""
    emb = sit.pos_embed_2d(8, 3)
    h, w = 2, 1
    omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
    want = np.concatenate([np.sin(w * omega), np.cos(w * omega), np.sin(h * omega), np.cos(h * omega)])
    np.testing.assert_allclose(emb[h * 3 + w], want, atol=1e-7)


def test_null_cond_and_config_errors():
    cfg = sit.SiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=1, num_heads=4,
                        num_classes=10)
    assert np.array_equal(sit_denoiser.null_cond(cfg)({"label": jnp.array([3, 7])})["label"], [10, 10])
    with pytest.raises(ConfigError, match="no null class"):
        sit_denoiser.null_cond(dataclasses.replace(cfg, class_dropout_prob=0.0))
    with pytest.raises(ConfigError, match="not a multiple of num_heads"):
        dataclasses.replace(cfg, num_heads=5)
    with pytest.raises(ConfigError, match="attention_impl"):
        dataclasses.replace(cfg, attention_impl="flash")
    with pytest.raises(ConfigError, match="Unknown SiT size"):
        sit.size_config("XXL/2")


# ---------------------------------------------------------------------------------------------- converter
def _run_convert(*args):
    return subprocess.run([sys.executable, "-m", "amd_jax.tools.convert_sit", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_convert_cli_reproduces_fixture_and_loads(tmp_path):
    out = tmp_path / "sit"
    res = _run_convert(f"--src={FIX / sit_weights.WEIGHTS_FILE}", f"--out={out}", "--num_heads=4")
    assert res.returncode == 0, res.stderr
    for name in (sit_weights.WEIGHTS_FILE, sit_weights.CONFIG_FILE):
        assert (out / name).read_bytes() == (FIX / name).read_bytes(), name
    cfg, _ = sit_weights.load_sit(str(out))
    assert cfg.dtype == "bfloat16" and cfg.num_classes == 10 and cfg.learn_sigma


def test_convert_cli_refuses_incomplete_checkpoint_before_writing(tmp_path):
    state = safetensors.numpy.load_file(FIX / sit_weights.WEIGHTS_FILE)
    del state["blocks.1.mlp.fc2.bias"]
    state["blocks.1.attn.q_norm.weight"] = np.ones(16, np.float32)
    bad = tmp_path / "bad.safetensors"
    safetensors.numpy.save_file(state, bad)
    out = tmp_path / "out"
    res = _run_convert(f"--src={bad}", f"--out={out}", "--num_heads=4")
    print(res.stderr)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "missing tensor: blocks.1.mlp.fc2.bias" in res.stderr
    assert "unexpected tensor: blocks.1.attn.q_norm.weight" in res.stderr
    assert "Nothing was written" in res.stderr and not out.exists()


def _corrupt(name):
    state = safetensors.numpy.load_file(FIX / sit_weights.WEIGHTS_FILE)
    if name == "shape":
        state["blocks.0.attn.proj.weight"] = state["blocks.0.attn.proj.weight"][:, :32]
    elif name == "pos_embed":
        state["pos_embed"] = state["pos_embed"][:, ::-1]  # the rows in the wrong raster order
    return state


@pytest.mark.parametrize("case, flags, message", [
    ("shape", {"heads": 4}, "shape mismatch: blocks.0.attn.proj.weight: checkpoint (64, 32), model (64, 64)"),
    ("pos_embed", {"heads": 4}, "pos_embed differs from SiT's fixed 2-D sin-cos table"),
    ("ok", {"size": "S/2"}, "depth 2 in the checkpoint, 12 asked"),
    ("ok", {"size": "S/2", "heads": 4}, "contradicts --size=S/2"),
    ("ok", {}, "Give --size"),
])
def test_convert_refuses_without_writing(tmp_path, case, flags, message):
    src = tmp_path / "src.safetensors"
    safetensors.numpy.save_file(_corrupt(case), src)
    out = tmp_path / "out"
    with pytest.raises((DamagedFileError, ConfigError), match="Fix|drop one|Give") as err:
        sit_convert.convert_file(str(src), str(out), **flags)
    assert message in str(err.value), str(err.value)
    assert not out.exists()


def test_convert_accepts_diffusers_names(tmp_path):
    sit_state = safetensors.numpy.load_file(FIX / sit_weights.WEIGHTS_FILE)
    diff = {"pos_embed.proj.weight": sit_state["x_embedder.proj.weight"],
            "pos_embed.proj.bias": sit_state["x_embedder.proj.bias"],
            "proj_out_1.weight": sit_state["final_layer.adaLN_modulation.1.weight"],
            "proj_out_1.bias": sit_state["final_layer.adaLN_modulation.1.bias"],
            "proj_out_2.weight": sit_state["final_layer.linear.weight"],
            "proj_out_2.bias": sit_state["final_layer.linear.bias"]}
    for b in range(2):
        emb = f"transformer_blocks.{b}.norm1.emb."
        for leaf in ("weight", "bias"):
            q, k, v = np.split(sit_state[f"blocks.{b}.attn.qkv.{leaf}"], 3)
            diff.update({f"transformer_blocks.{b}.attn1.to_q.{leaf}": q, f"transformer_blocks.{b}.attn1.to_k.{leaf}": k,
                         f"transformer_blocks.{b}.attn1.to_v.{leaf}": v,
                         f"transformer_blocks.{b}.attn1.to_out.0.{leaf}": sit_state[f"blocks.{b}.attn.proj.{leaf}"],
                         f"transformer_blocks.{b}.norm1.linear.{leaf}": sit_state[f"blocks.{b}.adaLN_modulation.1.{leaf}"],
                         f"transformer_blocks.{b}.ff.net.0.proj.{leaf}": sit_state[f"blocks.{b}.mlp.fc1.{leaf}"],
                         f"transformer_blocks.{b}.ff.net.2.{leaf}": sit_state[f"blocks.{b}.mlp.fc2.{leaf}"],
                         f"{emb}timestep_embedder.linear_1.{leaf}": sit_state[f"t_embedder.mlp.0.{leaf}"],
                         f"{emb}timestep_embedder.linear_2.{leaf}": sit_state[f"t_embedder.mlp.2.{leaf}"]})
        diff[f"{emb}class_embedder.embedding_table.weight"] = sit_state["y_embedder.embedding_table.weight"]
    with pytest.raises(ConfigError, match="--input_size"):
        sit_weights.convert(diff, 4, "diffusers")
    state, cfg = sit_weights.convert(diff, 4, "diffusers", input_size=8)
    assert cfg == sit_weights.load_sit(FIX)[0] and sorted(state) == sorted(sit_state)
    assert all(np.array_equal(state[k], sit_state[k]) for k in state)
    diff["transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias"] = np.zeros(64, np.float32)
    with pytest.raises(DamagedFileError, match="SiT shares one embedder"):
        sit_weights.convert(diff, 4, "diffusers", input_size=8)


def test_load_sit_names_the_missing_conversion(tmp_path):
    with pytest.raises(DamagedFileError, match="convert_sit --src=CKPT.pt"):
        sit_weights.load_sit(str(tmp_path))


# SiT's train.py saves {"model": ..., "ema": ..., "opt": opt.state_dict(), "args": args} (its argparse.Namespace)
_SIT_TRAIN_ARGS = dict(data_path="/data/imagenet/train", results_dir="results", model="SiT-XL/2", image_size=256,
                       num_classes=1000, epochs=1400, global_batch_size=256, global_seed=0, vae="ema", num_workers=4,
                       log_every=100, ckpt_every=50_000, sample_every=10_000, cfg_scale=4.0, wandb=False, ckpt=None,
                       path_type="Linear", prediction="velocity", loss_weight=None, sample_eps=None, train_eps=None)


class _NamespaceSubclass(argparse.Namespace):
    """Not argparse.Namespace itself: the load must refuse it too."""


def _save_train_py_checkpoint(path, args):
    """A checkpoint in SiT train.py's layout, written by torch: the tiny fixture's tensors as 'ema', a perturbed
    copy as 'model' (the converter must take the EMA), a real AdamW state after one step as 'opt', and `args`."""
    torch = pytest.importorskip("torch")
    ema = {k: torch.from_numpy(v.copy()) for k, v in safetensors.numpy.load_file(FIX / sit_weights.WEIGHTS_FILE).items()}
    params = {k: torch.nn.Parameter(v + 1.0) for k, v in ema.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=1e-4, weight_decay=0)
    sum((p * p).sum() for p in params.values()).backward()
    opt.step()
    model = {k: p.detach().clone() for k, p in params.items()}
    torch.save({"model": model, "ema": ema, "opt": opt.state_dict(), "args": args}, path)
    return torch


def test_convert_reads_sit_train_py_checkpoint_with_its_argparse_namespace(tmp_path):
    """SiT's own train.py checkpoint (its argparse.Namespace beside the tensors) converts, through the command line,
    to exactly the fixture's files (the EMA taken); the allowance does not outlive the load (torch's global list
    of safe classes is unchanged). Needs torch (skipped without it, like every torch pickle)."""
    src = tmp_path / "0400000.pt"
    torch = _save_train_py_checkpoint(src, argparse.Namespace(**_SIT_TRAIN_ARGS))
    with pytest.raises(Exception, match="argparse.Namespace"):  # what plain weights_only=True does with it
        torch.load(src, map_location="cpu", weights_only=True)
    out = tmp_path / "sit"
    res = _run_convert(f"--src={src}", f"--out={out}", "--num_heads=4")
    assert res.returncode == 0, res.stderr
    for name in (sit_weights.WEIGHTS_FILE, sit_weights.CONFIG_FILE):
        assert (out / name).read_bytes() == (FIX / name).read_bytes(), name
    before = list(torch.serialization.get_safe_globals())
    assert sorted(sit_weights.checkpoint_state(str(src))) == sorted(safetensors.numpy.load_file(out / "model.safetensors"))
    assert list(torch.serialization.get_safe_globals()) == before and argparse.Namespace not in before


@pytest.mark.parametrize("args", [types.SimpleNamespace(**_SIT_TRAIN_ARGS), _NamespaceSubclass(**_SIT_TRAIN_ARGS)],
                         ids=["SimpleNamespace", "Namespace_subclass"])
def test_convert_refuses_a_train_py_checkpoint_with_any_other_class(tmp_path, args):
    """Only argparse.Namespace itself is allowed: the same layout with another class (types.SimpleNamespace, even a
    subclass of Namespace) is refused with the weights_only explanation and nothing is written."""
    src = tmp_path / "ckpt.pt"
    _save_train_py_checkpoint(src, args)
    out = tmp_path / "out"
    with pytest.raises(DamagedFileError, match=r"torch.load\(weights_only=True\) refuses") as err:
        sit_convert.convert_file(str(src), str(out), heads=4)
    assert type(args).__name__ in str(err.value), str(err.value)
    assert not out.exists()
