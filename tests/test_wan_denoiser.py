"""Wan's flow-matching adapter (amd_jax/models/wan/denoiser.py) and timestep shift (method/schedules.py) against
diffusers 0.39's FlowMatchEulerDiscreteScheduler through the committed fixture tests/fixtures/wan_flow_schedule.json
(made by tests/fixtures/make_wan_schedule_fixture.py with torch; no torch here), and the adapter's x0 against closed
forms: a stand-in network, and the tiny random Wan transformer itself.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax.errors import ConfigError
from amd_jax.method.schedules import ShiftedRectifiedFlow, add_noise, make_schedule, shift_sigma
from amd_jax.models.common.denoiser import Denoiser
from amd_jax.models.wan import denoiser as wan_denoiser, transformer as wan

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "wan_flow_schedule.json"
CASES = json.loads(FIXTURE.read_text())["cases"]
IDS = [f"shift{c['shift']:g}" for c in CASES]
TOL = 1e-6  # float32 vs diffusers' float32: measured 0 on sigmas, timesteps and noising, <= 1.2e-7 on the Euler step


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_shift_and_timesteps_match_diffusers(case):
    train, custom, shift = case["train"], case["custom"], case["shift"]
    np.testing.assert_allclose(shift_sigma(np.float32(train["s"]), shift), train["sigma"], atol=TOL)
    np.testing.assert_allclose(1000 * np.float32(train["sigma"]), train["timestep"], atol=1e-4)
    sched = make_schedule("shifted_rectified_flow", shift=shift)
    np.testing.assert_allclose([sched.timestep(s) for s in custom["s"]], custom["sigma"][:-1], atol=TOL)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_adapter_feeds_diffusers_timesteps_and_steps_as_its_euler(case):
    """The network sees timestep = 1000 sigma, the noising is scale_noise's, and the x0 the Denoiser recovers from
    the velocity, re-noised to sigma_next with the implied eps, is diffusers' Euler step."""
    seen = []

    def stand_in(params, x, timestep, cond, features):
        seen.append(timestep)
        return jnp.asarray(params)

    sched = ShiftedRectifiedFlow(case["shift"])
    apply_fn = wan_denoiser.flow_match_apply(stand_in)
    for s, timestep in zip(case["custom"]["s"], case["custom"]["timestep"]):
        apply_fn(0.0, None, sched.timestep(s), None)
        np.testing.assert_allclose(seen[-1], timestep, atol=1e-4)

    noise_case = case["scale_noise"]
    sigma = noise_case["timestep"] / 1000
    got = add_noise(sched, np.float32(noise_case["x0"]), np.float32(noise_case["noise"]), np.full(2, sigma))
    np.testing.assert_allclose(got, noise_case["noised"], atol=TOL)

    step = case["step"]
    den = Denoiser(apply_fn, lambda c: c, sched, "velocity")
    x, sigma, nxt = np.float32(step["sample"]), np.full(2, step["sigma"], np.float32), step["sigma_next"]
    x0 = den.x0(np.float32(step["model_output"]), x, sigma, None)
    np.testing.assert_allclose(seen[-1], np.full(2, step["timestep"]), atol=1e-4)
    eps = (x - (1 - sigma[:, None]) * x0) / sigma[:, None]
    np.testing.assert_allclose((1 - nxt) * x0 + nxt * eps, step["prev_sample"], atol=1e-5)


def test_sample_t_is_the_shift_of_a_uniform_draw():
    shift, lo, hi = 3.0, 0.2, 0.9
    t = np.asarray(ShiftedRectifiedFlow(shift).sample_t(jax.random.PRNGKey(0), (20000,), lo, hi), np.float64)
    s = t / (shift - (shift - 1) * t)  # the inverse of sigma = shift s / (1 + (shift - 1) s)
    assert lo - 1e-6 <= s.min() and s.max() <= hi + 1e-6
    # uniform on [lo, hi]: mean (lo + hi) / 2, standard error (hi - lo) / sqrt(12 n) = 1.4e-3
    assert abs(s.mean() - (lo + hi) / 2) < 5 * (hi - lo) / np.sqrt(12 * s.size)


def test_x0_and_cfg_branches_match_the_closed_form():
    """A stand-in linear velocity u = a x + b timestep + mean(text): x0 = x - t u, with the prompt's text for the
    conditional branch and the negative prompt's for the unconditional one."""
    a, b = 0.3, 0.002
    r = np.random.default_rng(0)
    x = r.normal(size=(3, 2, 4, 4, 2)).astype(np.float32)
    t = np.float32([0.9, 0.5, 0.1])
    text, negative = r.normal(size=(3, 7, 5)).astype(np.float32), r.normal(size=(7, 5)).astype(np.float32)

    def stand_in(params, x, timestep, cond, features):
        bias = timestep * b + jnp.mean(cond["text"], axis=(1, 2))
        return a * x + bias[:, None, None, None, None]

    den = Denoiser(wan_denoiser.flow_match_apply(stand_in), wan_denoiser.null_cond(negative),
                   ShiftedRectifiedFlow(5.0), "velocity")

    def closed(text_mean):
        u = a * x + (1000 * t * b + text_mean)[:, None, None, None, None]
        return x - t[:, None, None, None, None] * u

    cond, uncond = den.x0_cond_uncond(None, x, t, {"text": text})
    np.testing.assert_allclose(cond, closed(text.mean(axis=(1, 2))), atol=1e-5)
    np.testing.assert_allclose(uncond, closed(np.full(3, negative.mean())), atol=1e-5)


def test_wan_transformer_through_the_adapter():
    """The tiny random transformer as a Denoiser: x0 = x_t - t * net(x_t, 1000 t, text), features pooled per
    sample."""
    cfg = wan.WanConfig(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16,
                        freq_dim=16, ffn_dim=32, num_layers=1, dtype="float32")
    params = wan.init_params(cfg, jax.random.PRNGKey(1))
    r = np.random.default_rng(1)
    x, text = r.normal(size=(2, 1, 4, 4, 4)).astype(np.float32), r.normal(size=(2, 3, 16)).astype(np.float32)
    t = np.float32([0.8, 0.3])
    den = wan_denoiser.make_denoiser(cfg, np.zeros((3, 16), np.float32), shift=3.0)
    both = jax.jit(lambda p: (den.x0_and_features(p, x, t, {"text": text}),
                              wan.WanTransformer(cfg).apply({"params": p}, x, 1000 * t, text)))
    (x0, feats), v = both(params)
    np.testing.assert_allclose(x0, x - t[:, None, None, None, None] * v, atol=1e-5)
    assert wan_denoiser.pool_features(feats).shape == (2, cfg.inner_dim)


def test_bad_negative_prompt_embeddings_are_refused():
    with pytest.raises(ConfigError, match=r"must be \[L, text_dim\]"):
        wan_denoiser.null_cond(np.zeros((2, 3, 16)))
    with pytest.raises(ConfigError, match="do not match the prompts'"):
        wan_denoiser.null_cond(np.zeros((4, 16)))({"text": np.zeros((2, 3, 16))})
