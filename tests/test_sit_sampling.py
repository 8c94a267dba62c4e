"""SiT's interpolant adapter and samplers against closed forms.

For Gaussian data x0 ~ N(m, S^2 I) under the project's RectifiedFlow (x_t = (1 - t) x0 + t eps) the marginal is
N((1 - t) m, var_t I) with var_t = (1 - t)^2 S^2 + t^2 and the exact velocity E[eps - x0 | x_t] is affine in x_t,
so the exact ODE maps noise z to m + S z, sample by sample, and the SDE's marginals are known.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax.method import sit_sampling
from amd_jax.method.schedules import RectifiedFlow, add_noise, target
from amd_jax.models.sit import denoiser as sit_denoiser
from amd_jax.models.sit import weights as sit_weights
from amd_jax.models.common.denoiser import Denoiser

M, S = jnp.array([1.5, -2.0]), 0.5
N = 65536  # samples per statistical check: standard error of the mean S / 256 ~ 0.002, of the std ~ 0.0014


def gauss_velocity(x, t):
    """Exact u(x, t) = E[eps | x_t] - E[x0 | x_t] for x0 ~ N(M, S^2), in the project's convention."""
    t = t[:, None]
    var = (1 - t) ** 2 * S**2 + t**2
    r = x - (1 - t) * M
    return t / var * r - (M + (1 - t) * S**2 / var * r)


@pytest.fixture(scope="module")
def z():
    return jax.random.normal(jax.random.PRNGKey(0), (N, 2))


# ------------------------------------------------------------------------------------------- conventions
def test_adapter_maps_sit_time_and_sign_to_rectified_flow():
    """A SiT-convention oracle that knows the (data, noise) pair: it must be called at t_sit = 1 - t on the point
    t_sit data + (1 - t_sit) noise, and its velocity data - noise must become the project's eps - x0."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    data, noise = jax.random.normal(k1, (4, 8, 8, 4)), jax.random.normal(k2, (4, 8, 8, 4))
    t = jax.random.uniform(k3, (4,))
    x_t = add_noise(RectifiedFlow(), data, noise, t)

    def oracle(params, x, t_sit, cond, features):
        s = t_sit[:, None, None, None]
        np.testing.assert_allclose(x, s * data + (1 - s) * noise, atol=1e-5)  # SiT's x_t = t x1 + (1 - t) x0
        v = data - noise
        np.testing.assert_allclose(x + (1 - s) * v, data, atol=1e-5)  # SiT's own x1 from its velocity
        return (v, "feats") if features else v

    apply = sit_denoiser.rectified_flow_apply(oracle)
    u = apply(None, x_t, t, {"label": jnp.zeros(4, jnp.int32)})
    np.testing.assert_allclose(u, target(RectifiedFlow(), "velocity", data, noise, t), atol=1e-6)  # eps - x0
    den = Denoiser(apply, lambda c: c, RectifiedFlow(), "velocity")
    np.testing.assert_allclose(den.x0(None, x_t, t, {"label": None}), data, atol=1e-4)
    assert apply(None, x_t, t, {}, features=True)[1] == "feats"


def test_sit_score_is_the_gaussian_score():
    x = jax.random.normal(jax.random.PRNGKey(2), (16, 2)) * 2
    s = jnp.linspace(0.0, 0.95, 16)
    t = 1 - s
    v = sit_sampling.sit_velocity(gauss_velocity)(x, s)
    var = ((1 - t) ** 2 * S**2 + t**2)[:, None]
    np.testing.assert_allclose(sit_sampling.sit_score(v, x, s), -(x - (1 - t)[:, None] * M) / var, rtol=1e-5)


# --------------------------------------------------------------------------------------------------- ODE
def test_ode_reproduces_the_exact_flow_with_its_order(z):
    exact = M + S * z
    err = {}
    for method in ("euler", "heun"):
        for steps in (10, 50):
            run = jax.jit(lambda z: sit_sampling.ode_sample(gauss_velocity, z, steps, method))
            out = run(z)
            assert np.array_equal(out, run(z))  # deterministic
            err[method, steps] = float(jnp.max(jnp.abs(out - exact)))
    print({f"{k[0]}-{k[1]}": f"{v:.1e}" for k, v in err.items()})
    assert err["heun", 50] < 2e-3 and err["euler", 50] < 0.1
    assert 3.5 < err["euler", 10] / err["euler", 50] < 6.5  # first order: 5x fewer steps, ~5x the error
    assert err["heun", 10] / err["heun", 50] > 12  # second order: ~25x


# --------------------------------------------------------------------------------------------------- SDE
def test_sde_matches_the_gaussian_marginal(z):
    def stats(**kw):
        x = jax.jit(lambda z, r: sit_sampling.sde_sample(gauss_velocity, z, r, 250, **kw))(z, jax.random.PRNGKey(3))
        return np.asarray(x.mean(0)), np.asarray(x.std(0)), x

    mean, std, _ = stats(last_step=None)  # Euler-Maruyama all the way to the data: N(M, S^2)
    print("SDE no last step:", mean, std)
    np.testing.assert_allclose(mean, M, atol=0.01)
    np.testing.assert_allclose(std, S, atol=0.005)
    # SiT's default: EM to t = h = 0.04 (exact marginal N((1-h) M, var_h)), then the noise-free 'Mean' step
    # x' = (1-h) x + h (2-h) E[x0 - eps | x]: affine, mean M, std = slope * sqrt(var_h).
    h = 0.04
    var_h = (1 - h) ** 2 * S**2 + h**2
    std_mean_step = ((1 - h) + h * (2 - h) * ((1 - h) * S**2 - h) / var_h) * np.sqrt(var_h)
    mean, std, x1 = stats()
    print(f"SDE SiT default: {mean} {std} (closed form std {std_mean_step:.5f})")
    np.testing.assert_allclose(mean, M, atol=0.01)
    np.testing.assert_allclose(std, std_mean_step, atol=0.005)
    _, _, x2 = stats()
    x3 = jax.jit(lambda z, r: sit_sampling.sde_sample(gauss_velocity, z, r, 250))(z, jax.random.PRNGKey(4))
    assert np.array_equal(x1, x2) and float(jnp.mean(jnp.abs(x1 - x3))) > 0.01  # the noise follows the key


def test_sde_refuses_unknown_options(z):
    with pytest.raises(ValueError, match="last_step"):
        sit_sampling.sde_sample(gauss_velocity, z[:2], jax.random.PRNGKey(0), 4, last_step="Heun")


# --------------------------------------------------------------------------------------------------- CFG
def test_guidance_is_sits_three_channel_cfg_in_one_call():
    calls = []

    def velocity(x, t, cond):  # channel c of sample b: label_b * (c + 1)
        calls.append(x.shape[0])
        return cond["label"][:, None, None, None] * (1.0 + jnp.arange(4.0)) * jnp.ones_like(x)

    x, t = jnp.zeros((2, 3, 3, 4)), jnp.full((2,), 0.5)
    cond, null = {"label": jnp.array([2.0, 5.0])}, {"label": jnp.array([10.0, 10.0])}
    out = sit_sampling.guided_velocity(velocity, cond, null, 4.0)(x, t)
    c = cond["label"][:, None] * jnp.arange(1.0, 5.0)  # [sample, channel]: conditional and unconditional values
    u = null["label"][:, None] * jnp.arange(1.0, 5.0)
    np.testing.assert_allclose(out[:, 1, 2], jnp.concatenate([(u + 4.0 * (c - u))[:, :3], c[:, 3:]], axis=1))
    assert calls == [4]  # x and x with cond and null: one batched call
    every = sit_sampling.guided_velocity(velocity, cond, null, 4.0, guided_channels=None)(x, t)
    np.testing.assert_allclose(every[:, 1, 2], u + 4.0 * (c - u))
    np.testing.assert_allclose(sit_sampling.guided_velocity(velocity, cond, null, 1.0)(x, t), velocity(x, t, cond))


def test_tiny_sit_samples_through_the_denoiser_interface():
    cfg, params = sit_weights.load_sit(pathlib.Path(__file__).parent / "fixtures" / "sit_tiny", dtype="float32")
    apply = sit_denoiser.denoiser_apply(cfg)
    cond = {"label": jnp.array([1, 7])}
    fn = sit_sampling.guided_velocity(lambda x, t, c: apply(params, x, t, c), cond, sit_denoiser.null_cond(cfg)(cond), 1.5)
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
    ode = jax.jit(lambda z: sit_sampling.ode_sample(fn, z, 4))(z)
    sde = jax.jit(lambda z: sit_sampling.sde_sample(fn, z, jax.random.PRNGKey(1), 5))(z)
    assert ode.shape == sde.shape == z.shape and bool(jnp.all(jnp.isfinite(ode)) & jnp.all(jnp.isfinite(sde)))
    assert float(jnp.mean(jnp.abs(ode - sde))) > 1e-3 and float(jnp.mean(jnp.abs(ode - z))) > 1e-2
