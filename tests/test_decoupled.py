"""Decoupled DMD (docs/METHOD.md section 4): dmd.decoupled_normalizer and dmd.ca_t_min/ca_t_max.

- decoupled_gradient against a NumPy float64 reference written from the formula, with and without DSA deltas;
- with a shared normaliser and one timestep it is DMD2's / AMD's gradient (to float rounding);
- the knobs off compute the generator's old DMD block (a copy kept here), to float rounding (two programs);
- a CA timestep of its own changes only the CA term (fake teacher and critic with known outputs);
- the knobs are validated, old checkpoints without them resume, a toy2d_tiny run with them finishes finite.
"""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax import method as M
from amd_jax.config import check_resume, validate
from amd_jax.errors import ConfigError
from amd_jax.method import dmd as D
from amd_jax.models.common.denoiser import Denoiser
from amd_jax.steps import Steps
from tiny import tiny_toy2d_config

decoupled_gradient = jax.jit(D.decoupled_gradient, static_argnames=("normalizer", "separate_normalizers"))
OMEGA = 4.5


def _arrays(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def decoupled_ref(x, xr_c, xf, xr_c_ca, xr_u_ca, omega, alpha_delta, beta_delta, normalizer, separate):
    """Per sample, float64: the DM part -beta_i DM_i / n_dm_i and the CA part -alpha_i (omega - 1) CA_i / n_ca_i
    of the gradient (their sum)."""
    x, xr_c, xf, xr_c_ca, xr_u_ca = (np.asarray(a, np.float64) for a in (x, xr_c, xf, xr_c_ca, xr_u_ca))
    target_ca = xr_u_ca + omega * (xr_c_ca - xr_u_ca)

    def norm(i, target):
        return {"sample": lambda: np.mean(np.abs(x[i] - target[i])),
                "batch": lambda: np.mean(np.abs(x - target)), "none": lambda: 1.0}[normalizer]()

    dm_part, ca_part = np.empty_like(x), np.empty_like(x)
    for i in range(x.shape[0]):
        alpha, beta = 1.0 + alpha_delta[i], 1.0 + beta_delta[i]
        n_ca = norm(i, target_ca)
        n_dm = norm(i, xr_c) if separate else n_ca
        dm_part[i] = -beta * (xr_c[i] - xf[i]) / n_dm
        ca_part[i] = -alpha * (omega - 1.0) * (xr_c_ca[i] - xr_u_ca[i]) / n_ca
    return dm_part, ca_part


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (6, 2)])
@pytest.mark.parametrize("normalizer", ["sample", "batch", "none"])
@pytest.mark.parametrize("separate", [True, False])
def test_decoupled_gradient_matches_the_formula(shape, normalizer, separate):
    x, xr_c, xf, xr_c_ca, xr_u_ca = _arrays(shape, 5)
    rng = np.random.default_rng(1)
    a_d, b_d = (rng.uniform(-0.5, 0.5, shape[0]).astype(np.float32) for _ in range(2))
    grad, metrics = decoupled_gradient(x, (xr_c, xf), (xr_c_ca, xr_u_ca), OMEGA, a_d, b_d, normalizer, separate)
    dm_part, ca_part = decoupled_ref(x, xr_c, xf, xr_c_ca, xr_u_ca, OMEGA, a_d, b_d, normalizer, separate)
    np.testing.assert_allclose(np.asarray(grad), dm_part + ca_part, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(metrics["dm_norm"]), np.mean(np.abs(dm_part)), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["ca_norm"]), np.mean(np.abs(ca_part)), rtol=1e-5)


def test_no_deltas_means_alpha_beta_one():
    x, xr_c, xf, xr_c_ca, xr_u_ca = _arrays((5, 2), 5, seed=3)
    grad, _ = decoupled_gradient(x, (xr_c, xf), (xr_c_ca, xr_u_ca), OMEGA, None, None, "sample", True)
    zeros = np.zeros(5, np.float32)
    dm_part, ca_part = decoupled_ref(x, xr_c, xf, xr_c_ca, xr_u_ca, OMEGA, zeros, zeros, "sample", True)
    np.testing.assert_allclose(np.asarray(grad), dm_part + ca_part, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("normalizer", ["sample", "batch", "none"])
def test_shared_normaliser_at_one_timestep_is_the_amd_gradient(normalizer):
    x, xr_c, xr_u, xf = _arrays((4, 3, 2, 2), 4, seed=2)
    a_d, b_d = np.linspace(-0.4, 0.4, 4, dtype=np.float32), np.linspace(0.3, -0.3, 4, dtype=np.float32)
    got, metrics = decoupled_gradient(x, (xr_c, xf), (xr_c, xr_u), OMEGA, a_d, b_d, normalizer, False)
    want, n = jax.jit(D.dmd_gradient, static_argnames="normalizer")(x, xr_c, xr_u, xf, OMEGA, a_d, b_d, normalizer)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["ca_normalizer"]), float(jnp.mean(n)), rtol=1e-6)


# ----------------------------------------------------------------------- the generator's DMD block, fake models

C_SHIFT, FAKE_GAIN = 0.25, 0.3


def _fake_models():
    """A teacher whose CA term is known in closed form: x0(x_t, t, cond) = cond * t + C_SHIFT (x_t ignored), so
    CA = xr_c - xr_u = t; a critic x0 = FAKE_GAIN * x_t that depends on the noise (only the DM term sees it)."""
    sched = M.make_schedule("rectified_flow")
    teacher = Denoiser(apply_fn=lambda p, x_t, t, cond: cond["c"] * t[:, None] + C_SHIFT + 0.0 * x_t,
                       null_cond=lambda cond: {"c": jnp.zeros_like(cond["c"])}, schedule=sched, prediction_type="x0")
    critic = types.SimpleNamespace(schedule=sched, x0=lambda p, x_t, t, cond: FAKE_GAIN * x_t)
    student = types.SimpleNamespace(schedule=sched)
    return types.SimpleNamespace(teacher=teacher, critic=critic, student=student, gt_zone=None)


def _config(**dmd):
    c = tiny_toy2d_config()
    c.student.timesteps = (1.0,)
    for k, v in dmd.items():
        c.dmd[k] = v
    return c


def _dmd_grad(config, x, cond, key=0):
    steps = Steps(config, _fake_models())
    state = types.SimpleNamespace(critic={"denoiser": None})
    k_gen = jax.random.PRNGKey(key)
    k_t, k_eps = jax.random.split(k_gen, 4)[:2]  # the keys steps._generator_noise draws t and eps from

    def grad(x, c):
        return steps._dmd_grad(state, {"teacher": None}, x, {"c": c}, steps._generator_noise(k_gen, x.shape), None, None)
    return jax.jit(grad)(x, cond), (k_t, k_eps)


def _old_dmd_block(config, models, x, cond, k_t, k_eps):
    """steps.py's generator DMD block before the decoupled knobs (commit 463127e), for the bit-for-bit test."""
    c, sched, sg = config, models.teacher.schedule, jax.lax.stop_gradient
    bsz = x.shape[0]
    t = sched.sample_t(k_t, (bsz,), c.dmd.t_min, c.dmd.t_max)
    eps = jax.random.normal(k_eps, x.shape, jnp.float32)
    x_t = M.add_noise(sched, sg(x), eps, t)
    cond = {"c": cond}
    xr_c = models.teacher.x0(None, x_t, t, cond)
    xr_u = models.teacher.x0(None, x_t, t, models.teacher.null_cond(cond))
    xf = models.critic.x0(None, x_t, t, cond)
    return M.dmd_gradient(x, xr_c, xr_u, xf, c.dmd.guidance_scale, None, None, c.dmd.normalizer)


def test_defaults_compute_the_old_dmd_block():
    """Two jitted programs (today's block, the old copy): equal to float rounding, not bit for bit, since XLA may
    fuse two programs differently by an ulp on some CPUs. Any real change (another t, eps, normaliser or term)
    moves the gradient by orders of magnitude more than the tolerance, and rows differ (random x and cond)."""
    x, cond = (jnp.asarray(a) for a in _arrays((16, 2), 2, seed=4))
    config = _config()
    (grad, metrics), (k_t, k_eps) = _dmd_grad(config, x, cond)
    old_grad, old_n = jax.jit(lambda x, cond: _old_dmd_block(config, _fake_models(), x, cond, k_t, k_eps))(x, cond)
    grad, old_grad = np.asarray(grad), np.asarray(old_grad)
    assert np.ptp(old_grad, axis=0).min() > 0.1 * np.abs(old_grad).max()  # rows truly differ: a mix-up would show
    np.testing.assert_allclose(grad, old_grad, rtol=1e-6, atol=1e-6 * np.abs(old_grad).max())  # a few ulp
    assert set(metrics) == {"dmd_norm"}
    np.testing.assert_allclose(float(metrics["dmd_norm"]), float(jnp.mean(old_n)), rtol=1e-6)


def test_own_ca_timestep_changes_only_the_ca_term():
    """t and t_ca fixed (t_min = t_max): grad(t_ca = a) - grad(t_ca = b) is the closed-form CA difference, and the
    DM part (noise-dependent through the critic) is the same."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((16, 2)).astype(np.float32))
    cond = jnp.ones((16, 2), jnp.float32)
    common = dict(t_min=0.3, t_max=0.3, decoupled_normalizer=True)
    (g_a, m_a), _ = _dmd_grad(_config(ca_t_min=0.6, ca_t_max=0.6, **common), x, cond)
    (g_b, m_b), _ = _dmd_grad(_config(ca_t_min=0.9, ca_t_max=0.9, **common), x, cond)
    omega = _config().dmd.guidance_scale

    def ca_part(t_ca):  # -(omega - 1) CA / mean|x - xr_cfg(t_ca)|, CA = t_ca, xr_cfg = C_SHIFT + omega t_ca
        xn = np.asarray(x, np.float64)
        n = np.mean(np.abs(xn - (C_SHIFT + omega * t_ca)), axis=1, keepdims=True)
        return -(omega - 1.0) * t_ca * np.asarray(cond) / n

    np.testing.assert_allclose(np.asarray(g_a) - np.asarray(g_b), ca_part(0.6) - ca_part(0.9), rtol=1e-5, atol=1e-5)
    # two programs (other t_ca constants): the DM part is the same to float rounding; the CA part really differs
    np.testing.assert_allclose(float(m_a["dm_norm"]), float(m_b["dm_norm"]), rtol=1e-6)
    assert abs(float(m_a["ca_norm"]) - float(m_b["ca_norm"])) > 1e-3 * float(m_b["ca_norm"])  # measured: 1.1%
    # and with t_ca = t it is the decoupled gradient at one timestep (the same eps, re-noised to the same t)
    (g_same, _), _ = _dmd_grad(_config(ca_t_min=0.3, ca_t_max=0.3, **common), x, cond)
    (g_one, _), _ = _dmd_grad(_config(**common), x, cond)
    np.testing.assert_allclose(np.asarray(g_same), np.asarray(g_one), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------- validation and resuming

@pytest.mark.parametrize("lo, hi", [(0.5, -1.0), (-1.0, 0.5), (0.7, 0.5), (0.5, 1.5)])
def test_bad_ca_timesteps_are_refused(lo, hi):
    config = _config(ca_t_min=lo, ca_t_max=hi)
    with pytest.raises(ConfigError, match=r"dmd\.ca_t_min/ca_t_max=.*set both to -1"):
        validate(config, num_devices=1)


def test_good_ca_timesteps_pass():
    validate(_config(ca_t_min=0.5, ca_t_max=0.98, decoupled_normalizer=True), num_devices=1)
    validate(_config(ca_t_min=1.0, ca_t_max=1.0), num_devices=1)


def _without_new_keys(config):
    saved = json.loads(json.dumps(config.to_dict()))
    for k in ("decoupled_normalizer", "ca_t_min", "ca_t_max"):
        del saved["dmd"][k]
    return saved


def test_old_checkpoint_without_the_keys_resumes_with_the_defaults():
    config = _config()
    check_resume(_without_new_keys(config), config.to_dict(), step=4)
    changed = _config(ca_t_min=0.5, ca_t_max=0.9)
    with pytest.raises(ConfigError) as e:
        check_resume(_without_new_keys(config), changed.to_dict(), step=4)
    assert "dmd.ca_t_max: -1.0 -> 0.9" in str(e.value) and "dmd.ca_t_min: -1.0 -> 0.5" in str(e.value)
    assert "2 training-semantics key(s)" in str(e.value)


# ------------------------------------------------------------------------------------------------ end to end

def test_toy2d_tiny_with_decoupled_knobs_finishes_finite(tmp_path):
    from amd_jax.loop import train
    from amd_jax.session import Session

    config = tiny_toy2d_config()
    config.dmd.decoupled_normalizer, config.dmd.ca_t_min, config.dmd.ca_t_max = True, 0.5, 0.98
    config.log.every, config.log.sample_every, config.eval.at_end = 2, 0, False
    train(Session(config, str(tmp_path / "run")))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    gen = [r for r in rows if "train/dm_norm" in r]
    assert gen, rows[:2]
    for r in gen:
        for k in ("dm_norm", "ca_norm", "dm_normalizer", "ca_normalizer", "loss_dm", "loss_generator"):
            assert np.isfinite(r[f"train/{k}"]), (k, r)
        assert r["train/ca_norm"] > 0 and r["train/skipped_generator"] == 0
    # the critic starts as a copy of the teacher (xf = xr_c, DM = 0); once it has trained, the DM term acts
    assert gen[-1]["train/dm_norm"] > 0


def test_checkpoint_written_without_the_keys_resumes(tmp_path):
    """A run whose checkpoint meta lacks the new keys (as written before they existed) resumes with the defaults."""
    from amd_jax.loop import train
    from amd_jax.session import Session

    config = tiny_toy2d_config()
    config.total_steps, config.log.sample_every, config.eval.at_end = 4, 0, False
    train(Session(config, str(tmp_path)))
    meta_file = tmp_path / "checkpoints" / "4" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["config"] = _without_new_keys(config)
    meta_file.write_text(json.dumps(meta))
    config.total_steps = 8
    session = Session(config, str(tmp_path))
    assert session.resume_step == 4
    train(session)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 8, steps
