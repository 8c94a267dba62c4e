"""amd_jax.method.dmd, .amd and .losses against plain NumPy float64 references (METHOD.md sections 2-4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from amd_jax.method import amd as A
from amd_jax.method import dmd as D
from amd_jax.method import losses as L

SHAPES = [(4, 3, 2, 2), (6, 2)]
OMEGAS = [1.0, 4.5, 8.0]
F32_MAX = np.finfo(np.float32).max

# Jitted entry points (one compile per signature instead of one per eager primitive keeps the file fast; the
# training step calls them under jit too). Eager calls are kept where eager behaviour matters (bit-exactness).
cfg = jax.jit(D.cfg)
dmd_normalizer = jax.jit(D.dmd_normalizer, static_argnames="kind")
decompose = jax.jit(D.decompose)
dmd_gradient = jax.jit(D.dmd_gradient, static_argnames="normalizer")
dmd_loss = jax.jit(D.dmd_loss)
group_advantage = jax.jit(A.group_advantage, static_argnames="group_size")
zone_mask = jax.jit(A.zone_mask)
dsa_deltas = jax.jit(A.dsa_deltas, static_argnames="mode")
rls_weights = jax.jit(A.rls_weights, static_argnames="mode")
denoising_loss = jax.jit(L.denoising_loss)
gan_generator_loss = jax.jit(L.gan_generator_loss)
gan_critic_loss = jax.jit(L.gan_critic_loss)


def f32(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def teacher_outputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    return f32(rng, shape), f32(rng, shape), f32(rng, shape), f32(rng, shape)  # x, xr_c, xr_u, xf


def f64(*arrays):
    return tuple(np.asarray(a, np.float64) for a in arrays)


# ------------------------------------------------------------------------------------------------ references


def dmd2_ref(x, xr_c, xr_u, xf, omega, alpha_delta=None, beta_delta=None, normalizer="sample"):
    """DMD2 (official code): p_real = x - xr_cfg, p_fake = x - xf, grad = (p_real - p_fake) / mean|p_real|.

    With deltas, AMD: grad = -(beta DM + alpha (omega - 1) CA) / n, DM = xr_c - xf, CA = xr_c - xr_u. Per-sample loop.
    normalizer 'batch': n = mean|p_real| over the whole batch; 'none': n = 1.
    """
    x, xr_c, xr_u, xf = f64(x, xr_c, xr_u, xf)
    b = x.shape[0]
    grad, n = np.empty_like(x), np.empty(b)
    xr_cfg_all = xr_u + omega * (xr_c - xr_u)
    for i in range(b):
        xr_cfg = xr_u[i] + omega * (xr_c[i] - xr_u[i])
        p_real, p_fake = x[i] - xr_cfg, x[i] - xf[i]
        n[i] = {
            "sample": lambda: np.mean(np.abs(p_real)),
            "batch": lambda: np.mean(np.abs(x - xr_cfg_all)),
            "none": lambda: 1.0,
        }[normalizer]()
        if alpha_delta is None and beta_delta is None:
            grad[i] = (p_real - p_fake) / n[i]
        else:
            alpha = 1.0 + (0.0 if alpha_delta is None else float(alpha_delta[i]))
            beta = 1.0 + (0.0 if beta_delta is None else float(beta_delta[i]))
            dm, ca = xr_c[i] - xf[i], xr_c[i] - xr_u[i]
            grad[i] = -(beta * dm + alpha * (omega - 1.0) * ca) / n[i]
    return np.nan_to_num(grad), n


def group_advantage_ref(r, group_size=1, std_floor=0.0, eps=1e-6, clip=1.0):
    r = np.asarray(r, np.float64)
    b = len(r)
    k = b if group_size in (0, 1) else group_size
    a, mean, std = np.empty(b), np.empty(b), np.empty(b)
    for start in range(0, b, k):
        seg = r[start : start + k]
        m = sum(seg) / k
        sd = (sum((v - m) ** 2 for v in seg) / k) ** 0.5  # population std
        for i in range(start, start + k):
            a[i] = min(max((r[i] - m) / (max(sd, std_floor) + eps), -clip), clip)
            mean[i], std[i] = m, sd
    return a, mean, std


def softplus_ref(x):
    x = np.asarray(x, np.float64)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


# ------------------------------------------------------------------------------------------------ dmd


@pytest.mark.parametrize("omega", [0.0, 1.0, 8.0])
def test_cfg(omega):
    _, xr_c, xr_u, _ = teacher_outputs((4, 3, 2, 2))
    got = cfg(jnp.asarray(xr_c), jnp.asarray(xr_u), omega)
    assert got.dtype == jnp.float32
    c, u = f64(xr_c, xr_u)
    np.testing.assert_allclose(np.asarray(got), u + omega * (c - u), rtol=1e-5, atol=1e-5)
    if omega == 0.0:
        np.testing.assert_array_equal(np.asarray(got), xr_u)


def test_cfg_bf16_inputs_are_upcast():
    _, xr_c, xr_u, _ = teacher_outputs((6, 2))
    c, u = jnp.asarray(xr_c, jnp.bfloat16), jnp.asarray(xr_u, jnp.bfloat16)
    got = cfg(c, u, 8.0)
    assert got.dtype == jnp.float32
    c64, u64 = f64(c, u)
    np.testing.assert_allclose(np.asarray(got), u64 + 8.0 * (c64 - u64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_dmd_normalizer(shape):
    x, xr_c, xr_u, _ = teacher_outputs(shape, 1)
    xr_cfg = cfg(jnp.asarray(xr_c), jnp.asarray(xr_u), 8.0)
    got = np.asarray(dmd_normalizer(jnp.asarray(x), xr_cfg))
    assert got.shape == (shape[0],) + (1,) * (len(shape) - 1)
    ref = [np.mean(np.abs(x[i].astype(np.float64) - np.asarray(xr_cfg[i], np.float64))) for i in range(shape[0])]
    np.testing.assert_allclose(got.reshape(-1), ref, rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_dmd_normalizer_batch_and_none(shape):
    x, xr_c, xr_u, _ = teacher_outputs(shape, 11)
    xr_cfg = D.cfg(jnp.asarray(xr_c), jnp.asarray(xr_u), 8.0)
    nb = np.asarray(dmd_normalizer(jnp.asarray(x), xr_cfg, "batch"))
    assert nb.shape == (1,) * len(shape)
    ref = np.mean(np.abs(x.astype(np.float64) - np.asarray(xr_cfg, np.float64)))
    np.testing.assert_allclose(nb.item(), ref, rtol=1e-6)
    nn = np.asarray(dmd_normalizer(jnp.asarray(x), xr_cfg, "none"))
    assert nn.shape == (1,) * len(shape) and nn.dtype == np.float32
    np.testing.assert_array_equal(nn, np.ones_like(nn))
    ns = np.asarray(dmd_normalizer(jnp.asarray(x), xr_cfg))  # default is DMD2's per-sample normaliser
    np.testing.assert_array_equal(ns, np.asarray(dmd_normalizer(jnp.asarray(x), xr_cfg, "sample")))
    assert ns.shape == (shape[0],) + (1,) * (len(shape) - 1)
    with pytest.raises(ValueError, match="normalizer"):
        D.dmd_normalizer(jnp.asarray(x), xr_cfg, "max")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("omega", OMEGAS)
def test_decompose(shape, omega):
    _, xr_c, xr_u, xf = teacher_outputs(shape, 2)
    dm, ca = decompose(jnp.asarray(xr_c), jnp.asarray(xr_u), jnp.asarray(xf), omega)
    c, u, f = f64(xr_c, xr_u, xf)
    np.testing.assert_allclose(np.asarray(dm), c - f, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ca), c - u, rtol=1e-6, atol=1e-6)
    # AMD Eq. 10: xr_cfg - xf = DM + (omega - 1) CA
    lhs = np.asarray(cfg(jnp.asarray(xr_c), jnp.asarray(xr_u), omega), np.float64) - f
    rhs = np.asarray(dm, np.float64) + (omega - 1.0) * np.asarray(ca, np.float64)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("omega", OMEGAS)
def test_dmd_gradient_matches_dmd2(shape, omega):
    x, xr_c, xr_u, xf = teacher_outputs(shape, 3)
    grad, n = dmd_gradient(*(jnp.asarray(a) for a in (x, xr_c, xr_u, xf)), omega)
    assert grad.dtype == jnp.float32 and grad.shape == shape
    ref_grad, ref_n = dmd2_ref(x, xr_c, xr_u, xf, omega)
    np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(n).reshape(-1), ref_n, rtol=1e-5)


@pytest.mark.parametrize("normalizer", ["sample", "batch", "none"])
@pytest.mark.parametrize("deltas", [False, True])
def test_dmd_gradient_normalizer_kinds(normalizer, deltas):
    x, xr_c, xr_u, xf = teacher_outputs((4, 3, 2, 2), 12)
    rng = np.random.default_rng(120)
    ad = rng.uniform(-0.3, 0.3, 4).astype(np.float32) if deltas else None
    bd = rng.uniform(-0.3, 0.3, 4).astype(np.float32) if deltas else None
    grad, n = dmd_gradient(
        *(jnp.asarray(a) for a in (x, xr_c, xr_u, xf)),
        8.0,
        None if ad is None else jnp.asarray(ad),
        None if bd is None else jnp.asarray(bd),
        normalizer=normalizer,
    )
    ref_grad, ref_n = dmd2_ref(x, xr_c, xr_u, xf, 8.0, ad, bd, normalizer)
    np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.broadcast_to(np.asarray(n).reshape(-1), (4,)), ref_n, rtol=1e-5)
    if deltas:  # zero deltas stay bit-exact whatever the normaliser
        z = jnp.zeros((4,), jnp.float32)
        args = [jnp.asarray(a) for a in (x, xr_c, xr_u, xf)]
        base = D.dmd_gradient(*args, 8.0, normalizer=normalizer)[0]
        assert np.array_equal(np.asarray(D.dmd_gradient(*args, 8.0, z, z, normalizer)[0]), np.asarray(base))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("which", ["both", "alpha", "beta"])
def test_dmd_gradient_with_deltas_matches_amd_formula(shape, which):
    omega = 8.0
    x, xr_c, xr_u, xf = teacher_outputs(shape, 4)
    rng = np.random.default_rng(40)
    ad = rng.uniform(-0.3, 0.3, shape[0]).astype(np.float32) if which in ("both", "alpha") else None
    bd = rng.uniform(-0.3, 0.3, shape[0]).astype(np.float32) if which in ("both", "beta") else None
    grad, n = dmd_gradient(
        *(jnp.asarray(a) for a in (x, xr_c, xr_u, xf)),
        omega,
        alpha_delta=None if ad is None else jnp.asarray(ad),
        beta_delta=None if bd is None else jnp.asarray(bd),
    )
    ref_grad, ref_n = dmd2_ref(x, xr_c, xr_u, xf, omega, ad, bd)
    np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(n).reshape(-1), ref_n, rtol=1e-5)
    # the deltas really change the gradient
    assert not np.allclose(np.asarray(grad), dmd2_ref(x, xr_c, xr_u, xf, omega)[0], rtol=1e-3, atol=1e-3)


def test_dmd_gradient_deltas_soft_formula_with_dsa():
    """alpha = 1 + s a~, beta = 1 - s a~ plugged in through dsa_deltas gives -(beta DM + alpha (w-1) CA)/n."""
    x, xr_c, xr_u, xf = teacher_outputs((6, 2), 5)
    adv = np.array([-1.0, -0.5, 0.0, 0.25, 0.7, 1.0], np.float32)
    ad, bd = dsa_deltas(jnp.asarray(adv), jnp.zeros(6), 0.2, "soft")
    grad, _ = dmd_gradient(*(jnp.asarray(a) for a in (x, xr_c, xr_u, xf)), 8.0, ad, bd)
    ref, _ = dmd2_ref(x, xr_c, xr_u, xf, 8.0, 0.2 * adv.astype(np.float64), -0.2 * adv.astype(np.float64))
    np.testing.assert_allclose(np.asarray(grad), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "shape,jit", [(SHAPES[0], False), (SHAPES[0], True), (SHAPES[1], True)], ids=["eager", "jit", "jit-2d"]
)
def test_dmd_gradient_zero_deltas_bit_exact(shape, jit):
    x, xr_c, xr_u, xf = (jnp.asarray(a) for a in teacher_outputs(shape, 6))
    b = shape[0]
    adv = jnp.asarray(np.linspace(-1, 1, b), jnp.float32)
    mask = (adv < -0.5).astype(jnp.float32)
    zero = jnp.zeros((b,), jnp.float32)
    soft0 = A.dsa_deltas(adv, mask, 0.0, "soft")
    hard0 = A.dsa_deltas(adv, mask, 0.0, "hard")
    wrap = jax.jit if jit else (lambda f: f)
    base = wrap(lambda *a: D.dmd_gradient(*a, 8.0))(x, xr_c, xr_u, xf)
    with_d = wrap(lambda x, c, u, f, ad, bd: D.dmd_gradient(x, c, u, f, 8.0, ad, bd))
    alpha_only = wrap(lambda x, c, u, f, ad: D.dmd_gradient(x, c, u, f, 8.0, alpha_delta=ad))
    beta_only = wrap(lambda x, c, u, f, bd: D.dmd_gradient(x, c, u, f, 8.0, beta_delta=bd))
    for got in (
        with_d(x, xr_c, xr_u, xf, zero, zero),
        with_d(x, xr_c, xr_u, xf, *soft0),
        with_d(x, xr_c, xr_u, xf, *hard0),
        alpha_only(x, xr_c, xr_u, xf, zero),
        beta_only(x, xr_c, xr_u, xf, zero),
    ):
        assert np.array_equal(np.asarray(got[0]), np.asarray(base[0]))
        assert np.array_equal(np.asarray(got[1]), np.asarray(base[1]))


def test_dmd_gradient_nan_to_num():
    """n_i = 0 (x_i == xr_cfg_i): inf -> float32 max, 0/0 -> 0, as DMD2's torch.nan_to_num."""
    x, xr_c, xr_u, xf = teacher_outputs((4, 3, 2, 2), 7)
    xr_c[0], xr_c[1] = xr_u[0], xr_u[1]  # no guidance on samples 0, 1: xr_cfg = xr_u exactly
    x[0], x[1] = xr_u[0], xr_u[1]  # n = 0
    xf[1] = xr_u[1]  # 0 / 0 on sample 1
    grad, n = dmd_gradient(*(jnp.asarray(a) for a in (x, xr_c, xr_u, xf)), 8.0)
    grad, n = np.asarray(grad), np.asarray(n).reshape(-1)
    assert n[0] == 0.0 and n[1] == 0.0
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[0], np.sign(xf[0] - xr_u[0]) * F32_MAX)
    np.testing.assert_array_equal(grad[1], np.zeros_like(grad[1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ref, _ = dmd2_ref(x, xr_c, xr_u, xf, 8.0)
    np.testing.assert_allclose(grad[2:], ref[2:], rtol=1e-4, atol=1e-5)


def test_dmd_gradient_is_stop_gradient():
    shape = (4, 3, 2, 2)
    args = [jnp.asarray(a) for a in teacher_outputs(shape, 8)]
    rng = np.random.default_rng(80)
    ad, bd = jnp.asarray(rng.uniform(-0.3, 0.3, 4), jnp.float32), jnp.asarray(rng.uniform(-0.3, 0.3, 4), jnp.float32)
    cg, cn = jnp.asarray(f32(rng, shape)), jnp.asarray(f32(rng, (4, 1, 1, 1)))

    def f(x, c, u, xf, ad, bd):
        g, n = dmd_gradient(x, c, u, xf, 8.0, ad, bd)
        return jnp.sum(cg * g) + jnp.sum(cn * n)

    grads = jax.jit(jax.grad(f, argnums=tuple(range(6))))(*args, ad, bd)
    for g in grads:
        np.testing.assert_array_equal(np.asarray(g), np.zeros(g.shape, np.float32))


@pytest.mark.parametrize("shape", SHAPES)
def test_dmd_loss_value_and_gradient(shape):
    x, xr_c, xr_u, xf = teacher_outputs(shape, 9)
    grad, _ = dmd_gradient(*(jnp.asarray(a) for a in (x, xr_c, xr_u, xf)), 8.0)
    loss = dmd_loss(jnp.asarray(x), grad)
    assert loss.dtype == jnp.float32 and loss.shape == ()
    g64 = np.asarray(grad, np.float64)
    # DMD2: 0.5 * F.mse_loss(x, (x - grad).detach(), reduction="mean")
    x64 = x.astype(np.float64)
    ref = 0.5 * np.mean((x64 - (x64 - g64)) ** 2)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    np.testing.assert_allclose(float(loss), 0.5 * np.mean(g64**2), rtol=1e-5)
    dx, dgrad = jax.jit(jax.grad(D.dmd_loss, argnums=(0, 1)))(jnp.asarray(x), grad)
    np.testing.assert_allclose(np.asarray(dx), g64 / x.size, rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(dgrad), np.zeros(shape, np.float32))  # grad is detached


# ------------------------------------------------------------------------------------------------ amd


REWARDS = np.random.default_rng(100).normal(0.3, 0.05, 16).astype(np.float32)


@pytest.mark.parametrize("group_size", [0, 1, 2, 4, 8, 16])
@pytest.mark.parametrize("clip", [0.5, 1.0, 10.0])
def test_group_advantage(group_size, clip):
    a, mean, std = group_advantage(jnp.asarray(REWARDS), group_size=group_size, clip=clip)
    assert a.shape == mean.shape == std.shape == (16,)
    ra, rm, rs = group_advantage_ref(REWARDS, group_size, clip=clip)
    np.testing.assert_allclose(np.asarray(a), ra, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(mean), rm, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(std), rs, rtol=1e-4, atol=1e-7)
    assert np.all(np.abs(np.asarray(a)) <= clip)


def test_group_advantage_whole_batch_and_consecutive_groups():
    r = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0], np.float32)
    a1, m1, s1 = (np.asarray(v) for v in group_advantage(jnp.asarray(r), 1, clip=100.0))
    np.testing.assert_allclose(m1, np.full(8, r.mean()), rtol=1e-6)
    np.testing.assert_allclose(s1, np.full(8, np.std(r)), rtol=1e-6)  # population std (ddof=0) ...
    assert not np.allclose(s1, np.std(r, ddof=1), rtol=1e-3)  # ... not the sample std
    a4, m4, s4 = (np.asarray(v) for v in group_advantage(jnp.asarray(r), 4, clip=100.0))
    np.testing.assert_allclose(m4, [1.5] * 4 + [11.5] * 4, rtol=1e-6)
    np.testing.assert_allclose(s4, np.full(8, np.std([0.0, 1.0, 2.0, 3.0])), rtol=1e-6)
    np.testing.assert_allclose(a4[:4], a4[4:], rtol=1e-6)
    np.testing.assert_allclose(a4[:4], (np.arange(4) - 1.5) / (np.std(np.arange(4)) + 1e-6), rtol=1e-6)


def test_group_advantage_std_floor_and_eps():
    r = np.array([0.5, 0.501, 0.499, 0.5, 0.2, 0.8, 0.4, 0.6], np.float32)
    a, _, std = group_advantage(jnp.asarray(r), 4, std_floor=0.05, clip=100.0)
    ra, _, rs = group_advantage_ref(r, 4, std_floor=0.05, clip=100.0)
    np.testing.assert_allclose(np.asarray(a), ra, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(std), rs, rtol=1e-3)  # std itself is reported unfloored
    assert np.max(np.abs(np.asarray(a)[:4])) < 0.03  # the floor damps the near-constant group
    # a constant group: std = 0, advantage 0 / (0 + eps) = 0
    a0, _, s0 = group_advantage(jnp.full((4,), 0.7, jnp.float32), 1)
    np.testing.assert_array_equal(np.asarray(a0), np.zeros(4, np.float32))
    np.testing.assert_array_equal(np.asarray(s0), np.zeros(4, np.float32))
    # eps enters the denominator
    r2 = np.array([0.0, 2e-6], np.float32)
    a2, _, _ = group_advantage(jnp.asarray(r2), 1, eps=1e-6, clip=100.0)
    np.testing.assert_allclose(np.asarray(a2), group_advantage_ref(r2, 1, eps=1e-6, clip=100.0)[0], rtol=1e-3)
    np.testing.assert_allclose(np.asarray(a2), [-0.5, 0.5], rtol=1e-3)


def test_group_advantage_bad_group_size():
    with pytest.raises(ValueError, match="group_size"):
        A.group_advantage(jnp.asarray(REWARDS), group_size=3)


def test_group_advantage_jit_matches_eager():
    f = jax.jit(lambda r: group_advantage(r, group_size=4, std_floor=0.01, clip=1.0))
    for got, ref in zip(f(jnp.asarray(REWARDS)), group_advantage_ref(REWARDS, 4, 0.01, clip=1.0)):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tau", [0.0, 0.5, 0.9])
def test_zone_mask(tau):
    adv = np.array([-1.0, -0.9, -0.5, -0.49, 0.0, 0.3, 1.0, -0.91], np.float32)
    m = zone_mask(jnp.asarray(adv), tau)
    assert m.dtype == jnp.float32
    ref = np.array([1.0 if a < -tau else 0.0 for a in adv.astype(np.float64)], np.float32)
    np.testing.assert_array_equal(np.asarray(m), ref)


@pytest.mark.parametrize("s", [0.0, 0.1, 0.5])
def test_dsa_deltas_soft(s):
    adv = np.linspace(-1.0, 1.0, 9).astype(np.float32)
    ad, bd = dsa_deltas(jnp.asarray(adv), jnp.zeros(9), s, "soft")
    alpha, beta = 1.0 + np.asarray(ad, np.float64), 1.0 + np.asarray(bd, np.float64)
    np.testing.assert_allclose(alpha, 1.0 + s * adv.astype(np.float64), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(beta, 1.0 - s * adv.astype(np.float64), rtol=1e-6, atol=1e-7)
    assert np.all((alpha >= 1 - s - 1e-7) & (alpha <= 1 + s + 1e-7))
    assert np.all((beta >= 1 - s - 1e-7) & (beta <= 1 + s + 1e-7))
    if s == 0.0:
        assert np.all(np.asarray(ad) == 0.0) and np.all(np.asarray(bd) == 0.0)
    else:
        low, high = adv < 0, adv > 0  # low reward: more DM (beta > 1), less CFG pull (alpha < 1)
        assert np.all(beta[low] > 1) and np.all(alpha[low] < 1)
        assert np.all(beta[high] < 1) and np.all(alpha[high] > 1)


@pytest.mark.parametrize("s", [0.0, 0.3])
def test_dsa_deltas_hard(s):
    adv = np.array([-1.0, -0.8, 0.2, 0.9, -0.1, 0.0], np.float32)
    mask = np.asarray(zone_mask(jnp.asarray(adv), 0.5))
    np.testing.assert_array_equal(mask, [1, 1, 0, 0, 0, 0])
    ad, bd = dsa_deltas(jnp.asarray(adv), jnp.asarray(mask), s, "hard")
    alpha, beta = 1.0 + np.asarray(ad, np.float64), 1.0 + np.asarray(bd, np.float64)
    np.testing.assert_allclose(alpha, 1.0 - s * mask, rtol=1e-6)
    np.testing.assert_allclose(beta, 1.0 + s * mask, rtol=1e-6)
    assert np.all(np.asarray(ad)[mask == 0] == 0.0) and np.all(np.asarray(bd)[mask == 0] == 0.0)
    if s == 0.0:
        assert np.all(np.asarray(ad) == 0.0) and np.all(np.asarray(bd) == 0.0)


def test_dsa_low_reward_gets_more_matching_end_to_end():
    r = np.array([0.1, 0.5, 0.6, 0.55, 0.52, 0.58], np.float32)  # sample 0 is the failure
    adv, _, _ = group_advantage(jnp.asarray(r), 1)
    mask = zone_mask(adv, 0.5)
    for mode in ("soft", "hard"):
        ad, bd = dsa_deltas(adv, mask, 0.2, mode)
        assert float(bd[0]) > 0 and float(ad[0]) < 0
        assert float(bd[0]) == pytest.approx(0.2) and float(ad[0]) == pytest.approx(-0.2)


def test_dsa_invalid_mode():
    with pytest.raises(ValueError, match="DSA mode"):
        A.dsa_deltas(jnp.zeros(4), jnp.zeros(4), 0.1, "linear")


@pytest.mark.parametrize("mode", ["hard", "soft"])
@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0])
def test_rls_weights(mode, lam):
    adv = np.array([-1.0, -0.7, -0.2, 0.0, 0.1, 0.4, 0.8, 1.0], np.float32)
    if mode == "soft" and lam >= 1.0:
        lam = 0.9  # soft needs lam < 1 / max|a~|
    mask = (adv < -0.5).astype(np.float32)
    w = np.asarray(rls_weights(jnp.asarray(adv), jnp.asarray(mask), lam, mode))
    assert w.dtype == np.float32 and w.shape == (8,)
    raw = [(1.0 + lam * m) if mode == "hard" else (1.0 - lam * a) for a, m in zip(adv.astype(np.float64), mask)]
    ref = np.array(raw) / np.mean(raw)
    np.testing.assert_allclose(w, ref, rtol=1e-6)
    assert np.mean(w.astype(np.float64)) == pytest.approx(1.0, abs=1e-6)
    assert np.all(w > 0)
    if lam == 0.0:
        np.testing.assert_array_equal(w, np.ones(8, np.float32))
    elif mode == "hard":
        assert np.all(w[mask == 1] > w[mask == 0].max())
    else:
        assert np.all(np.diff(w) < 0)  # lower advantage -> heavier weight


def test_rls_invalid_mode():
    with pytest.raises(ValueError, match="RLS mode"):
        A.rls_weights(jnp.zeros(4), jnp.zeros(4), 0.5, "linear")


def test_amd_functions_have_zero_gradient():
    rng = np.random.default_rng(200)
    r = jnp.asarray(REWARDS)
    adv = jnp.asarray(rng.uniform(-0.9, 0.9, 16), jnp.float32)
    mask = jnp.asarray((rng.uniform(size=16) < 0.4), jnp.float32)
    c = [jnp.asarray(f32(rng, (16,))) for _ in range(3)]

    def ga(r):  # large clip so the advantage is not saturated (its true derivative is non-zero)
        a, m, s = A.group_advantage(r, group_size=4, clip=100.0)
        return jnp.sum(c[0] * a) + jnp.sum(c[1] * m) + jnp.sum(c[2] * s)

    def dsa(a, m, mode):
        ad, bd = A.dsa_deltas(a, m, 0.3, mode)
        return jnp.sum(c[0] * ad) + jnp.sum(c[1] * bd)

    checks = [jax.jit(jax.grad(ga))(r)]
    checks += [jax.jit(jax.grad(lambda a: jnp.sum(c[0] * A.zone_mask(a, 0.5))))(adv)]
    for mode in ("soft", "hard"):
        checks += jax.jit(jax.grad(lambda a, m: dsa(a, m, mode), argnums=(0, 1)))(adv, mask)
        checks += jax.jit(jax.grad(lambda a, m: jnp.sum(c[0] * A.rls_weights(a, m, 0.5, mode)), argnums=(0, 1)))(
            adv, mask
        )
    for g in checks:
        np.testing.assert_array_equal(np.asarray(g), np.zeros(16, np.float32))


# ------------------------------------------------------------------------------------------------ global batch


@pytest.mark.parametrize("group_size", [1, 2, 8])
def test_group_advantage_is_a_global_batch_statistic(group_size):
    devices = jax.devices()
    assert len(devices) == 8, "conftest should simulate 8 CPU devices"
    mesh = Mesh(np.array(devices), ("data",))
    b = 32  # 4 samples per device; group_size 8 spans two devices, 2 stays inside one
    r = np.random.default_rng(300 + group_size).normal(0.3, 0.1, b).astype(np.float32)
    r[:4] += 0.5  # device 0 is much better than the rest: per-device statistics would differ a lot
    sharded = jax.device_put(jnp.asarray(r), NamedSharding(mesh, P("data")))
    assert len(sharded.sharding.device_set) == 8
    assert sharded.addressable_shards[0].data.shape == (4,)

    f = jax.jit(lambda r: group_advantage(r, group_size=group_size, clip=10.0))
    got = [np.asarray(v) for v in f(sharded)]
    unsharded = [np.asarray(v) for v in f(jnp.asarray(r))]
    ref = group_advantage_ref(r, group_size, clip=10.0)
    for g, u, rf in zip(got, unsharded, ref):
        np.testing.assert_allclose(g, u, rtol=1e-5, atol=1e-6)  # cross-device reduction order: float32 ulps
        np.testing.assert_allclose(g, rf, rtol=1e-4, atol=1e-5)
    if group_size in (1, 8):  # per-device statistics (4 samples each) would give a different answer
        per_device = np.concatenate([group_advantage_ref(r[i : i + 4], 1, clip=10.0)[0] for i in range(0, b, 4)])
        assert not np.allclose(got[0], per_device, atol=1e-2)

    # the whole AMD chain under the same sharding: RLS weights renormalise over the global batch
    def chain(r):
        a, _, _ = group_advantage(r, group_size=group_size)
        m = zone_mask(a, 0.5)
        return rls_weights(a, m, 1.0, "hard"), m

    w, m = (np.asarray(v) for v in jax.jit(chain)(sharded))
    ra = group_advantage_ref(r, group_size)[0]
    rm = (ra < -0.5).astype(np.float64)
    np.testing.assert_array_equal(m, rm)
    np.testing.assert_allclose(w, (1 + rm) / np.mean(1 + rm), rtol=1e-6)


def test_batch_normalizer_is_a_global_batch_statistic():
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x, xr_c, xr_u, xf = teacher_outputs((16, 2), 13)
    x[:2] *= 10.0  # device 0 far from the teacher: a per-device mean would differ
    shard = NamedSharding(mesh, P("data"))
    args = [jax.device_put(jnp.asarray(a), shard) for a in (x, xr_c, xr_u, xf)]
    grad, n = dmd_gradient(*args, 8.0, normalizer="batch")
    ref_grad, ref_n = dmd2_ref(x, xr_c, xr_u, xf, 8.0, normalizer="batch")
    np.testing.assert_allclose(np.asarray(n).reshape(-1), ref_n[:1], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ losses


@pytest.mark.parametrize("shape", SHAPES)
def test_denoising_loss(shape):
    rng = np.random.default_rng(400)
    pred, tgt = f32(rng, shape), f32(rng, shape)
    w = rng.uniform(0.5, 1.5, shape[0]).astype(np.float32)
    w /= w.mean()
    p64, t64 = f64(pred, tgt)
    unweighted = denoising_loss(jnp.asarray(pred), jnp.asarray(tgt))
    assert unweighted.dtype == jnp.float32 and unweighted.shape == ()
    np.testing.assert_allclose(float(unweighted), np.mean((p64 - t64) ** 2), rtol=1e-5)
    weighted = denoising_loss(jnp.asarray(pred), jnp.asarray(tgt), jnp.asarray(w))
    ref = np.mean([w[i] * (p64[i] - t64[i]) ** 2 for i in range(shape[0])])
    np.testing.assert_allclose(float(weighted), ref, rtol=1e-5)
    assert not np.isclose(float(weighted), float(unweighted), rtol=1e-4)
    # weights of exactly 1.0 (RLS with lam = 0) reproduce the DMD2 critic loss bit for bit, eager and jitted
    ones = jnp.ones((shape[0],), jnp.float32)
    assert np.array_equal(np.asarray(denoising_loss(jnp.asarray(pred), jnp.asarray(tgt), ones)), np.asarray(unweighted))
    eu = L.denoising_loss(jnp.asarray(pred), jnp.asarray(tgt))  # eager
    ew = L.denoising_loss(jnp.asarray(pred), jnp.asarray(tgt), A.rls_weights(jnp.zeros(shape[0]), ones, 0.0))
    assert np.array_equal(np.asarray(eu), np.asarray(ew))
    # gradient: 2 w (pred - tgt) / numel w.r.t. pred; none w.r.t. the (stop-gradient) target
    dp, dt = jax.jit(jax.grad(L.denoising_loss, argnums=(0, 1)))(jnp.asarray(pred), jnp.asarray(tgt), jnp.asarray(w))
    wb = w.astype(np.float64).reshape((-1,) + (1,) * (len(shape) - 1))
    np.testing.assert_allclose(np.asarray(dp), 2 * wb * (p64 - t64) / pred.size, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(dt), np.zeros(shape, np.float32))


LOGITS = np.array([[-100.0], [-3.0], [-0.5], [0.0], [0.7], [4.0], [100.0], [30.0]], np.float32)


def test_gan_generator_loss():
    got = gan_generator_loss(jnp.asarray(LOGITS))
    assert got.dtype == jnp.float32 and np.isfinite(float(got))
    np.testing.assert_allclose(float(got), np.mean(softplus_ref(-LOGITS.astype(np.float64))), rtol=1e-6)
    np.testing.assert_allclose(float(gan_generator_loss(jnp.zeros((4, 1)))), np.log(2.0), rtol=1e-6)


def test_gan_critic_loss():
    real = np.random.default_rng(500).normal(0, 3, (6, 1)).astype(np.float32)
    got = gan_critic_loss(jnp.asarray(LOGITS), jnp.asarray(real))
    assert got.dtype == jnp.float32 and np.isfinite(float(got))
    ref = np.mean(softplus_ref(LOGITS)) + np.mean(softplus_ref(-real.astype(np.float64)))
    np.testing.assert_allclose(float(got), ref, rtol=1e-6)
    # a perfect critic (fake very negative, real very positive) has ~ zero loss
    assert float(gan_critic_loss(jnp.full((4, 1), -50.0), jnp.full((4, 1), 50.0))) < 1e-20


def test_gan_losses_bf16_logits_and_gradient():
    lf = jnp.asarray(LOGITS[:, 0], jnp.bfloat16)
    got = gan_generator_loss(lf)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), np.mean(softplus_ref(-np.asarray(lf, np.float64))), rtol=1e-6)
    # d/dl mean softplus(-l) = -sigmoid(-l) / N
    l64 = LOGITS.astype(np.float64)
    g = jax.jit(jax.grad(L.gan_generator_loss))(jnp.asarray(LOGITS))
    np.testing.assert_allclose(np.asarray(g), -1.0 / (1.0 + np.exp(l64)) / LOGITS.size, rtol=1e-5, atol=1e-12)
