"""amd_jax.method.schedules and amd_jax.method.simulation against plain NumPy float64 references.

Every reference here is written from the closed form (METHOD.md sections 1-2, the class docstrings), not by
calling the code under test: loops where that makes the reference obviously right.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax.method import schedules as S
from amd_jax.method import simulation as SIM

SHAPES = [(4, 3, 2, 2), (6, 2)]

# Jitted entry points (one compile per signature instead of one per eager primitive keeps the file fast); the
# schedule and prediction type are static, as in the training step.
add_noise = jax.jit(S.add_noise, static_argnums=0)
target = jax.jit(S.target, static_argnums=(0, 1))
to_x0 = jax.jit(S.to_x0, static_argnums=(0, 1))
backward_simulation = jax.jit(SIM.backward_simulation, static_argnums=(0, 1, 4))
ddim_sample = jax.jit(SIM.ddim_sample, static_argnums=(0, 1))
sample = jax.jit(SIM.sample, static_argnums=(0, 1))


# ------------------------------------------------------------------------------------------------ references


def ddpm_abar_ref(beta_start=0.00085, beta_end=0.012, T=1000):
    """diffusers 'scaled_linear': betas = linspace(sqrt(b0), sqrt(b1), T)**2, abar = cumprod(1 - betas) (a loop)."""
    abar = np.empty(T, np.float64)
    prod = 1.0
    for i in range(T):
        beta = (math.sqrt(beta_start) + i / (T - 1) * (math.sqrt(beta_end) - math.sqrt(beta_start))) ** 2
        prod *= 1.0 - beta
        abar[i] = prod
    return abar


def vp_ref(t, b0=0.1, b1=20.0):
    """Song et al. VP SDE with linear beta: alpha, sigma and their exact time derivatives (float64)."""
    t = np.asarray(t, np.float64)
    log_alpha = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
    alpha = np.exp(log_alpha)
    sigma = np.sqrt(1.0 - alpha**2)
    d_alpha = alpha * (-0.5 * t * (b1 - b0) - 0.5 * b0)
    d_sigma = -alpha * d_alpha / sigma
    return alpha, sigma, d_alpha, d_sigma


def rf_ref(t):
    t = np.asarray(t, np.float64)
    return 1.0 - t, t, -np.ones_like(t), np.ones_like(t)


def coeffs_ref(name, t):
    """(alpha, sigma, d_alpha, d_sigma) as float64 arrays; derivatives None for the discrete schedule."""
    if name == "ddpm":
        abar = ddpm_abar_ref()[np.asarray(t, np.int64)]
        return np.sqrt(abar), np.sqrt(1.0 - abar), None, None
    if name == "vp":
        return vp_ref(t)
    return rf_ref(t)


def pred_coeffs(ptype, alpha, sigma, d_alpha, d_sigma):
    """The native output as c1 * x0 + c2 * eps, per prediction type (scalars for one sample)."""
    return {
        "eps": (0.0, 1.0),
        "x0": (1.0, 0.0),
        "v": (-sigma, alpha),
        "velocity": (d_alpha, d_sigma),
    }[ptype]


def make_t(name, b, rng):
    if name == "ddpm":
        return rng.integers(20, 981, size=b).astype(np.int32)
    return rng.uniform(0.05, 0.95, size=b).astype(np.float32)


def f32(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


SCHEDULE_NAMES = ["ddpm", "vp", "rectified_flow"]
VALID = [(s, p) for s in SCHEDULE_NAMES for p in S.PREDICTION_TYPES if not (s == "ddpm" and p == "velocity")]


# ------------------------------------------------------------------------------------------------ DiscreteDDPM


def test_ddpm_alphas_cumprod_matches_diffusers_closed_form():
    got = S.DiscreteDDPM().alphas_cumprod()
    ref = ddpm_abar_ref()
    assert got.shape == (1000,) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
    # diffusers' own one-liner for SDXL's scheduler, as a second independent form
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    np.testing.assert_allclose(got, np.cumprod(1.0 - betas), rtol=1e-12, atol=0)


def test_ddpm_known_values():
    abar = S.DiscreteDDPM().alphas_cumprod()
    assert abar[0] == pytest.approx(1.0 - 0.00085, abs=1e-15)
    assert abar[999] == pytest.approx(0.00466, abs=5e-5)  # SDXL final alphas_cumprod ~ 0.0047
    assert np.all(np.diff(abar) < 0)


def test_ddpm_custom_parameters():
    s = S.DiscreteDDPM(beta_start=1e-4, beta_end=0.02, num_timesteps=50)
    np.testing.assert_allclose(s.alphas_cumprod(), ddpm_abar_ref(1e-4, 0.02, 50), rtol=1e-12)
    a, sg = s.alpha_sigma(jnp.array([0, 49]))
    ref = ddpm_abar_ref(1e-4, 0.02, 50)
    np.testing.assert_allclose(np.asarray(a), np.sqrt(ref[[0, 49]]), rtol=1e-6)


def test_ddpm_alpha_sigma():
    t = np.array([0, 1, 20, 250, 500, 749, 980, 999], np.int32)
    a, s = S.DiscreteDDPM().alpha_sigma(jnp.asarray(t))
    assert a.dtype == jnp.float32 and s.dtype == jnp.float32 and a.shape == t.shape
    abar = ddpm_abar_ref()[t]
    np.testing.assert_allclose(np.asarray(a), np.sqrt(abar), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s), np.sqrt(1.0 - abar), rtol=2e-5)
    np.testing.assert_allclose(np.asarray(a, np.float64) ** 2 + np.asarray(s, np.float64) ** 2, 1.0, atol=1e-6)


def test_ddpm_has_no_derivative():
    with pytest.raises(ValueError, match="DiscreteDDPM"):
        S.DiscreteDDPM().d_alpha_sigma(jnp.array([500]))


@pytest.mark.parametrize(
    "lo,hi,t_lo,t_hi", [(0.02, 0.98, 20, 980), (0.0, 1.0, 0, 999), (0.25, 0.75, 250, 750), (0.5, 0.5, 500, 500)]
)
def test_ddpm_sample_t_includes_both_ends(lo, hi, t_lo, t_hi):
    t = np.asarray(S.DiscreteDDPM().sample_t(jax.random.PRNGKey(3), (20000,), lo, hi))
    assert t.dtype == np.int32 and t.shape == (20000,)
    assert t.min() == t_lo and t.max() == t_hi
    # every integer of the closed range is drawn (P(miss) < 1e-6 at 20000 draws of <= 1000 values)
    assert set(np.unique(t).tolist()) == set(range(t_lo, t_hi + 1))


def test_ddpm_sample_t_shape_and_key():
    s = S.DiscreteDDPM()
    t = s.sample_t(jax.random.PRNGKey(0), (4, 2), 0.02, 0.98)
    assert t.shape == (4, 2)
    t2 = s.sample_t(jax.random.PRNGKey(1), (4, 2), 0.02, 0.98)
    assert not np.array_equal(np.asarray(t), np.asarray(t2))


@pytest.mark.parametrize(
    "fraction,expected", [(1.0, 999), (0.0, 0), (0.5, 500), (0.25, 250), (0.999, 999), (0.7496, 750), (0.2494, 249)]
)
def test_ddpm_timestep(fraction, expected):
    t = S.DiscreteDDPM().timestep(fraction)
    assert t.dtype == jnp.int32 and int(t) == expected


# ------------------------------------------------------------------------------------------------ continuous


def test_vp_alpha_sigma_closed_form():
    t = np.linspace(0.0, 1.0, 21).astype(np.float32)
    a, s = jax.jit(S.VPContinuous().alpha_sigma)(jnp.asarray(t))
    with np.errstate(divide="ignore"):  # d_sigma at t = 0
        ra, rs, _, _ = vp_ref(t.astype(np.float64))
    assert a.dtype == jnp.float32 and s.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(a), ra, rtol=2e-6)
    np.testing.assert_allclose(np.asarray(s), rs, rtol=2e-6, atol=1e-7)
    assert float(a[0]) == 1.0 and float(s[0]) == 0.0
    np.testing.assert_allclose(np.asarray(a, np.float64) ** 2 + np.asarray(s, np.float64) ** 2, 1.0, atol=1e-6)


def test_vp_custom_betas():
    s = S.VPContinuous(beta_min=0.5, beta_max=5.0)
    t = np.array([0.1, 0.5, 0.9], np.float32)
    a, sg = jax.jit(s.alpha_sigma)(jnp.asarray(t))
    ra, rs, rda, rds = vp_ref(t.astype(np.float64), 0.5, 5.0)
    np.testing.assert_allclose(np.asarray(a), ra, rtol=2e-6)
    np.testing.assert_allclose(np.asarray(sg), rs, rtol=2e-6)
    da, ds = jax.jit(s.d_alpha_sigma)(jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(da), rda, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ds), rds, rtol=1e-5)


@pytest.mark.parametrize("name", ["vp", "rectified_flow"])
def test_d_alpha_sigma_finite_differences_and_autodiff(name):
    sched = S.make_schedule(name)
    t = np.linspace(0.05, 0.95, 10)
    da, ds = (np.asarray(v, np.float64) for v in jax.jit(sched.d_alpha_sigma)(jnp.asarray(t, jnp.float32)))
    ref = vp_ref if name == "vp" else rf_ref
    h = 1e-6
    ap, sp, _, _ = ref(t + h)
    am, sm, _, _ = ref(t - h)
    np.testing.assert_allclose(da, (ap - am) / (2 * h), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds, (sp - sm) / (2 * h), rtol=1e-5, atol=1e-6)
    # the implementation's own alpha/sigma, differentiated by JAX
    ad_a = jax.jit(jax.vmap(jax.grad(lambda x: sched.alpha_sigma(x)[0])))(jnp.asarray(t, jnp.float32))
    ad_s = jax.jit(jax.vmap(jax.grad(lambda x: sched.alpha_sigma(x)[1])))(jnp.asarray(t, jnp.float32))
    np.testing.assert_allclose(da, np.asarray(ad_a), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ds, np.asarray(ad_s), rtol=1e-4, atol=1e-6)


def test_rectified_flow_alpha_sigma():
    t = np.array([0.0, 0.1, 0.5, 0.9, 1.0], np.float32)
    sched = S.RectifiedFlow()
    a, s = sched.alpha_sigma(jnp.asarray(t))
    np.testing.assert_array_equal(np.asarray(a), (1.0 - t).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(s), t)
    da, ds = sched.d_alpha_sigma(jnp.asarray(t))
    np.testing.assert_array_equal(np.asarray(da), -np.ones(5, np.float32))
    np.testing.assert_array_equal(np.asarray(ds), np.ones(5, np.float32))


@pytest.mark.parametrize("name", ["vp", "rectified_flow"])
@pytest.mark.parametrize("lo,hi", [(0.02, 0.98), (0.0, 1.0), (0.3, 0.4)])
def test_continuous_sample_t(name, lo, hi):
    t = np.asarray(S.make_schedule(name).sample_t(jax.random.PRNGKey(5), (10000,), lo, hi))
    assert t.dtype == np.float32 and t.shape == (10000,)
    assert t.min() >= np.float32(lo) and t.max() <= np.float32(hi)
    width = hi - lo
    assert t.min() < lo + 0.01 * width and t.max() > hi - 0.01 * width
    assert abs(t.mean() - 0.5 * (lo + hi)) < 0.02 * width


@pytest.mark.parametrize("name", ["vp", "rectified_flow"])
def test_continuous_timestep(name):
    t = S.make_schedule(name).timestep(0.75)
    assert t.dtype == jnp.float32 and float(t) == 0.75


def test_make_schedule():
    assert isinstance(S.make_schedule("ddpm"), S.DiscreteDDPM)
    assert isinstance(S.make_schedule("vp", beta_max=10.0), S.VPContinuous)
    assert S.make_schedule("vp", beta_max=10.0).beta_max == 10.0
    assert isinstance(S.make_schedule("rectified_flow"), S.RectifiedFlow)
    assert S.make_schedule("ddpm").discrete and not S.make_schedule("vp").discrete
    assert not S.make_schedule("rectified_flow").discrete
    with pytest.raises(ValueError, match="Unknown schedule"):
        S.make_schedule("cosine")


# ---------------------------------------------------------------------------------------- add_noise / target / to_x0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_add_noise(name, shape):
    rng = np.random.default_rng(0)
    x0, eps = f32(rng, shape), f32(rng, shape)
    t = make_t(name, shape[0], rng)
    got = add_noise(S.make_schedule(name), jnp.asarray(x0), jnp.asarray(eps), jnp.asarray(t))
    assert got.dtype == jnp.float32 and got.shape == shape
    a, s, _, _ = coeffs_ref(name, t)
    ref = np.empty(shape)
    for i in range(shape[0]):
        ref[i] = a[i] * x0[i].astype(np.float64) + s[i] * eps[i].astype(np.float64)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)


def test_add_noise_scalar_t_and_bf16():
    rng = np.random.default_rng(1)
    x0, eps = f32(rng, (4, 3, 2, 2)), f32(rng, (4, 3, 2, 2))
    sched = S.DiscreteDDPM()
    got = add_noise(sched, jnp.asarray(x0, jnp.bfloat16), jnp.asarray(eps, jnp.bfloat16), jnp.int32(500))
    assert got.dtype == jnp.float32
    abar = ddpm_abar_ref()[500]
    x0b = np.asarray(jnp.asarray(x0, jnp.bfloat16), np.float64)
    epsb = np.asarray(jnp.asarray(eps, jnp.bfloat16), np.float64)
    np.testing.assert_allclose(np.asarray(got), np.sqrt(abar) * x0b + np.sqrt(1 - abar) * epsb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,ptype", VALID)
def test_target_and_to_x0_vs_linear_solve(name, ptype, shape):
    """target = c1 x0 + c2 eps; to_x0 = x0 of the 2x2 solve [alpha sigma; c1 c2] [x0; eps] = [x_t; pred]."""
    rng = np.random.default_rng(2)
    x0, eps, pred = f32(rng, shape), f32(rng, shape), f32(rng, shape)
    x_t = f32(rng, shape)  # arbitrary x_t: to_x0 must be the exact linear inverse, not only on the data manifold
    t = make_t(name, shape[0], rng)
    sched = S.make_schedule(name)
    a, s, da, ds = coeffs_ref(name, t)
    tgt = np.asarray(target(sched, ptype, jnp.asarray(x0), jnp.asarray(eps), jnp.asarray(t)))
    x0_hat = np.asarray(to_x0(sched, ptype, jnp.asarray(pred), jnp.asarray(x_t), jnp.asarray(t)))
    assert tgt.dtype == np.float32 and x0_hat.dtype == np.float32
    tgt_ref, x0_ref = np.empty(shape), np.empty(shape)
    for i in range(shape[0]):
        c1, c2 = pred_coeffs(ptype, a[i], s[i], None if da is None else da[i], None if ds is None else ds[i])
        tgt_ref[i] = c1 * x0[i].astype(np.float64) + c2 * eps[i].astype(np.float64)
        m = np.array([[a[i], s[i]], [c1, c2]], np.float64)
        rhs = np.stack([x_t[i].reshape(-1), pred[i].reshape(-1)]).astype(np.float64)
        x0_ref[i] = np.linalg.solve(m, rhs)[0].reshape(shape[1:])
    np.testing.assert_allclose(tgt, tgt_ref, rtol=1e-5, atol=1e-5)
    # conditioning of the solve: 1/alpha reaches ~15 (ddpm t=980) and ~100 (vp t=0.95)
    np.testing.assert_allclose(x0_hat, x0_ref, rtol=1e-4, atol=5e-4)


@pytest.mark.parametrize("name,ptype", VALID)
def test_round_trip_recovers_x0(name, ptype):
    rng = np.random.default_rng(3)
    shape = (4, 3, 2, 2)
    x0, eps = f32(rng, shape), f32(rng, shape)
    t = jnp.asarray(make_t(name, shape[0], rng))
    sched = S.make_schedule(name)
    x_t = add_noise(sched, jnp.asarray(x0), jnp.asarray(eps), t)
    pred = target(sched, ptype, jnp.asarray(x0), jnp.asarray(eps), t)
    np.testing.assert_allclose(np.asarray(to_x0(sched, ptype, pred, x_t, t)), x0, rtol=1e-4, atol=5e-4)


@pytest.mark.parametrize("name,ptype", [("ddpm", "v"), ("vp", "velocity"), ("rectified_flow", "velocity")])
def test_round_trip_eager(name, ptype):
    rng = np.random.default_rng(4)
    x0, eps = jnp.asarray(f32(rng, (6, 2))), jnp.asarray(f32(rng, (6, 2)))
    t = jnp.asarray(make_t(name, 6, rng))
    sched = S.make_schedule(name)
    x_t = S.add_noise(sched, x0, eps, t)
    rt = S.to_x0(sched, ptype, S.target(sched, ptype, x0, eps, t), x_t, t)
    np.testing.assert_allclose(np.asarray(rt), np.asarray(x0), rtol=1e-4, atol=5e-4)
    # eager and jitted agree
    np.testing.assert_allclose(np.asarray(x_t), np.asarray(add_noise(sched, x0, eps, t)), rtol=1e-6, atol=1e-6)


def test_trivial_parameterisations_are_exact():
    rng = np.random.default_rng(5)
    x0, eps, x_t = f32(rng, (6, 2)), f32(rng, (6, 2)), f32(rng, (6, 2))
    t = jnp.arange(6, dtype=jnp.int32) * 100
    sched = S.DiscreteDDPM()
    np.testing.assert_array_equal(np.asarray(target(sched, "eps", x0, eps, t)), eps)
    np.testing.assert_array_equal(np.asarray(target(sched, "x0", x0, eps, t)), x0)
    np.testing.assert_array_equal(np.asarray(to_x0(sched, "x0", jnp.asarray(x0), jnp.asarray(x_t), t)), x0)


def test_rectified_flow_velocity_is_eps_minus_x0():
    rng = np.random.default_rng(6)
    x0, eps = f32(rng, (6, 2)), f32(rng, (6, 2))
    t = jnp.asarray(rng.uniform(0, 1, 6).astype(np.float32))
    u = target(S.RectifiedFlow(), "velocity", jnp.asarray(x0), jnp.asarray(eps), t)
    np.testing.assert_allclose(np.asarray(u), eps - x0, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fn", ["to_x0", "target"])
def test_ddpm_velocity_raises(fn):
    x = jnp.zeros((4, 3, 2, 2))
    t = jnp.full((4,), 500, jnp.int32)
    with pytest.raises(ValueError, match="DiscreteDDPM"):
        getattr(S, fn)(S.DiscreteDDPM(), "velocity", x, x, t)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("fn", ["to_x0", "target"])
def test_unknown_prediction_type_raises(name, fn):
    x = jnp.zeros((6, 2))
    t = jnp.asarray(make_t(name, 6, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="prediction_type"):
        getattr(S, fn)(S.make_schedule(name), "score", x, x, t)


def test_prediction_types_constant():
    assert S.PREDICTION_TYPES == ("eps", "x0", "v", "velocity")


# ------------------------------------------------------------------------------------------------ simulation


RNG = jax.random.PRNGKey(42)
DDPM_STEPS = np.array([999, 749, 499, 249], np.int32)
FLOW_STEPS = np.array([1.0, 0.75, 0.5, 0.25], np.float32)


def x0_fn_jax(x, t):
    """A known, t-dependent 'student': 0.5 x + 1e-3 t (t is per-sample [B])."""
    return 0.5 * x + 1e-3 * t.astype(jnp.float32).reshape(t.shape + (1,) * (x.ndim - 1))


def x0_fn_np(x, t):
    return 0.5 * x + 1e-3 * np.asarray(t, np.float64).reshape(t.shape + (1,) * (x.ndim - 1))


def eps_j(rng, j, shape):
    return np.asarray(jax.random.normal(jax.random.fold_in(rng, j), shape, jnp.float32), np.float64)


def backward_simulation_ref(name, timesteps, z, k, rng):
    b = z.shape[0]
    x = z.astype(np.float64)
    for j in range(k):
        x0 = x0_fn_np(x, np.full(b, timesteps[j]))
        a, s, _, _ = coeffs_ref(name, np.array([timesteps[j + 1]]))
        x = a[0] * x0 + s[0] * eps_j(rng, j, z.shape)
    return x


def sample_ref(name, timesteps, z, rng):
    n = len(timesteps)
    x = backward_simulation_ref(name, timesteps, z, n - 1, rng)
    return x0_fn_np(x, np.full(z.shape[0], timesteps[n - 1]))


SIM_CASES = [("ddpm", DDPM_STEPS), ("rectified_flow", FLOW_STEPS), ("vp", np.array([0.95, 0.6, 0.3], np.float32))]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,steps", SIM_CASES)
def test_backward_simulation_concrete_k(name, steps, shape):
    z = f32(np.random.default_rng(7), shape)
    sched = S.make_schedule(name)
    for k in range(len(steps)):
        got = backward_simulation(x0_fn_jax, sched, jnp.asarray(steps), jnp.asarray(z), k, RNG)
        assert got.dtype == jnp.float32 and got.shape == shape
        ref = backward_simulation_ref(name, steps, z, k, RNG)
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)


def test_backward_simulation_k0_returns_z():
    z = f32(np.random.default_rng(8), (4, 3, 2, 2))
    got = SIM.backward_simulation(x0_fn_jax, S.DiscreteDDPM(), jnp.asarray(DDPM_STEPS), jnp.asarray(z), 0, RNG)
    np.testing.assert_array_equal(np.asarray(got), z)
    steps = jnp.asarray(DDPM_STEPS)
    jitted = jax.jit(lambda z, k: SIM.backward_simulation(x0_fn_jax, S.DiscreteDDPM(), steps, z, k, RNG))
    np.testing.assert_array_equal(np.asarray(jitted(jnp.asarray(z), jnp.int32(0))), z)


@pytest.mark.parametrize("name,steps", SIM_CASES[:2])
def test_backward_simulation_traced_k(name, steps):
    z = f32(np.random.default_rng(9), (4, 3, 2, 2))
    sched = S.make_schedule(name)
    fn = jax.jit(lambda z, k, rng: SIM.backward_simulation(x0_fn_jax, sched, jnp.asarray(steps), z, k, rng))
    outs = []
    for k in range(len(steps)):
        got = np.asarray(fn(jnp.asarray(z), jnp.int32(k), RNG))
        np.testing.assert_allclose(got, backward_simulation_ref(name, steps, z, k, RNG), rtol=1e-5, atol=1e-5)
        outs.append(got)
    # k drawn inside the jitted step, as in training (one index shared by the batch)
    k_rng = jax.random.PRNGKey(11)
    k = int(jax.random.randint(k_rng, (), 0, len(steps)))
    drawn = jax.jit(
        lambda z, kr: SIM.backward_simulation(
            x0_fn_jax, sched, jnp.asarray(steps), z, jax.random.randint(kr, (), 0, len(steps)), RNG
        )
    )(jnp.asarray(z), k_rng)
    np.testing.assert_allclose(np.asarray(drawn), outs[k], rtol=1e-6, atol=1e-6)


def test_backward_simulation_noise_depends_on_rng():
    z = jnp.asarray(f32(np.random.default_rng(10), (6, 2)))
    sched, steps = S.DiscreteDDPM(), jnp.asarray(DDPM_STEPS)
    a = backward_simulation(x0_fn_jax, sched, steps, z, 2, jax.random.PRNGKey(0))
    b = backward_simulation(x0_fn_jax, sched, steps, z, 2, jax.random.PRNGKey(1))
    assert not np.allclose(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,steps", SIM_CASES)
def test_sample(name, steps, shape):
    z = f32(np.random.default_rng(12), shape)
    got = sample(x0_fn_jax, S.make_schedule(name), jnp.asarray(steps), jnp.asarray(z), RNG)
    assert got.shape == shape
    np.testing.assert_allclose(np.asarray(got), sample_ref(name, steps, z, RNG), rtol=1e-5, atol=1e-5)


def test_sample_eager_and_one_step():
    z = f32(np.random.default_rng(13), (4, 3, 2, 2))
    sched = S.DiscreteDDPM()
    got = SIM.sample(x0_fn_jax, sched, jnp.asarray(DDPM_STEPS), jnp.asarray(z), RNG)  # eager
    np.testing.assert_allclose(np.asarray(got), sample_ref("ddpm", DDPM_STEPS, z, RNG), rtol=1e-5, atol=1e-5)
    one = sample(x0_fn_jax, sched, jnp.asarray([999], jnp.int32), jnp.asarray(z), RNG)
    np.testing.assert_allclose(np.asarray(one), x0_fn_np(z.astype(np.float64), np.full(4, 999)), rtol=1e-6, atol=1e-6)


def _w_fn(w):
    return lambda x, t: w * x + 1e-3 * t.astype(jnp.float32).reshape(t.shape + (1,) * (x.ndim - 1))


@pytest.mark.parametrize("traced", [False, True])
def test_backward_simulation_has_no_gradient(traced):
    z = jnp.asarray(f32(np.random.default_rng(14), (4, 3, 2, 2)))
    c = jnp.asarray(f32(np.random.default_rng(15), (4, 3, 2, 2)))
    sched, steps = S.DiscreteDDPM(), jnp.asarray(DDPM_STEPS)

    def f(z, w, k):
        return jnp.sum(c * SIM.backward_simulation(_w_fn(w), sched, steps, z, k, RNG))

    grad = jax.jit(jax.grad(f, argnums=(0, 1)), static_argnums=() if traced else (2,))
    for k in (1, 3):
        gz, gw = grad(z, jnp.float32(0.5), jnp.int32(k) if traced else k)
        np.testing.assert_array_equal(np.asarray(gz), np.zeros(z.shape, np.float32))
        assert float(gw) == 0.0


def test_sample_gradient_flows_through_last_step_only():
    z = jnp.asarray(f32(np.random.default_rng(16), (4, 3, 2, 2)))
    sched, steps = S.DiscreteDDPM(), jnp.asarray(DDPM_STEPS)
    gz, gw = jax.jit(jax.grad(lambda z, w: jnp.sum(SIM.sample(_w_fn(w), sched, steps, z, RNG)), argnums=(0, 1)))(z, 0.5)
    np.testing.assert_array_equal(np.asarray(gz), np.zeros(z.shape, np.float32))
    x_last = backward_simulation_ref("ddpm", DDPM_STEPS, np.asarray(z), 3, RNG)
    np.testing.assert_allclose(float(gw), x_last.sum(), rtol=1e-4)


def ddim_ref(name, timesteps, z):
    """Deterministic DDIM (eta = 0): x0 = f(x_t, t), eps = (x_t - alpha x0) / sigma, x_t' = alpha' x0 + sigma' eps."""
    b = z.shape[0]
    x = z.astype(np.float64)
    for j in range(len(timesteps) - 1):
        x0 = x0_fn_np(x, np.full(b, timesteps[j]))
        a, s, _, _ = coeffs_ref(name, np.array([timesteps[j]]))
        eps = (x - a[0] * x0) / s[0]
        a1, s1, _, _ = coeffs_ref(name, np.array([timesteps[j + 1]]))
        x = a1[0] * x0 + s1[0] * eps
    return x0_fn_np(x, np.full(b, timesteps[-1]))


DDIM_CASES = [
    ("ddpm", np.array([999, 749, 499, 249, 0], np.int32)),
    ("rectified_flow", np.array([1.0, 0.75, 0.5, 0.25, 0.0], np.float32)),
    ("vp", np.array([0.95, 0.6, 0.3, 0.05], np.float32)),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,steps", DDIM_CASES)
def test_ddim_sample(name, steps, shape):
    z = f32(np.random.default_rng(17), shape)
    got = ddim_sample(x0_fn_jax, S.make_schedule(name), jnp.asarray(steps), jnp.asarray(z))
    assert got.dtype == jnp.float32 and got.shape == shape
    np.testing.assert_allclose(np.asarray(got), ddim_ref(name, steps, z), rtol=1e-4, atol=1e-5)


def test_ddim_sample_eager_and_one_step():
    z = f32(np.random.default_rng(18), (6, 2))
    sched, steps = S.DiscreteDDPM(), DDIM_CASES[0][1]
    got = SIM.ddim_sample(x0_fn_jax, sched, jnp.asarray(steps), jnp.asarray(z))  # eager
    np.testing.assert_allclose(np.asarray(got), ddim_ref("ddpm", steps, z), rtol=1e-4, atol=1e-5)
    one = ddim_sample(x0_fn_jax, sched, jnp.asarray([999], jnp.int32), jnp.asarray(z))
    np.testing.assert_allclose(np.asarray(one), x0_fn_np(z.astype(np.float64), np.full(6, 999)), rtol=1e-6, atol=1e-6)
