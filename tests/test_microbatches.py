"""Gradient accumulation (train.microbatches): the losses and gradients of the generator and critic steps computed in
sequential pieces of the batch.

- batching.mean_over_pieces: a weighted least-squares loss and its gradient in 1-4 pieces against the closed form in
  NumPy; the pieces are strided (piece c holds rows c, m + c, ...: every device keeps its own rows).
- The steps: AMD (soft DSA, RLS) with the GAN, a 2-step student (backward simulation) and decoupled DMD: 4 pieces
  give the whole batch's samples, rewards and metrics and, after several iterations, its parameters; and so do 2
  pieces on 8 devices (data=4, fsdp=2) through the session's sharded programs, with the gradient sums constrained
  to the parameters' FSDP sharding (what that constraint saves in memory is not measured here).
- The FSDP weight all-gathers stay inside the micro-batch loop (an optimization barrier; XLA hoists them otherwise).
- A count that does not divide the samples per device is refused by the config check, and so is the 'batch' DMD
  normaliser (a statistic of the whole batch).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax.batching import mean_over_pieces
from amd_jax.errors import ConfigError
from amd_jax.session import Session
from tiny import run_toy_steps, tiny_toy2d_config, toy_steps


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("pieces", [1, 2, 3, 4])
def test_mean_over_pieces_gives_the_batch_loss_and_gradient(pieces):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 3)), rng.standard_normal(12)
    w, theta = rng.uniform(0.5, 2.0, 12), rng.standard_normal(3)
    rows = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.float32), "w": jnp.asarray(w, jnp.float32)}

    def loss(th, r):
        return jnp.mean(r["w"] * (r["x"] @ th - r["y"]) ** 2)

    got_loss, got_grad = jax.jit(lambda th: mean_over_pieces(jax.value_and_grad(loss), pieces, th, rows))(
        jnp.asarray(theta, jnp.float32))
    res = x @ theta - y
    np.testing.assert_allclose(float(got_loss), np.mean(w * res**2), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got_grad), 2.0 / 12 * (w * res) @ x, rtol=1e-5, atol=1e-6)


def test_pieces_are_strided_so_that_every_device_keeps_its_rows():
    # 12 rows in 3 pieces: {0, 3, 6, 9}, {1, 4, 7, 10}, {2, 5, 8, 11}: the pieces' largest indices average 10
    # (contiguous pieces {0..3}, {4..7}, {8..11} would average 7)
    idx = {"i": jnp.arange(12, dtype=jnp.float32)}
    got = mean_over_pieces(lambda _, r: jnp.max(r["i"]), 3, None, idx)
    assert float(got) == 10.0
    with pytest.raises(ValueError, match="5 pieces .chunks. do not divide the batch of 12"):
        mean_over_pieces(lambda _, r: jnp.max(r["i"]), 5, None, idx)


def _amd_config(microbatches, **overrides):
    c = tiny_toy2d_config(**overrides)
    c.method, c.amd.s, c.amd.rls_lambda, c.amd.dsa_mode = "amd", 0.5, 1.0, "soft"
    c.gan.enabled = True
    c.student.timesteps = (1.0, 0.5)  # backward simulation: the pieces re-run the student's last step from it
    c.dmd.decoupled_normalizer = True
    c.train.microbatches = microbatches
    c.optim.warmup_steps = 0  # the first update moves the parameters (a warm-up starts at learning rate 0)
    return c


def test_micro_batched_steps_match_the_whole_batch():
    whole, pieces = _amd_config(1), _amd_config(4)
    steps1, frozen, state, data = toy_steps(whole)
    steps4 = toy_steps(pieces)[0]
    batch = jax.tree_util.tree_map(jnp.asarray, data.global_batch(0, whole.global_batch))

    s1, x1, r1, m1 = jax.jit(steps1.generator_step)(state, frozen, batch)
    s4, x4, r4, m4 = jax.jit(steps4.generator_step)(state, frozen, batch)
    np.testing.assert_allclose(np.asarray(x4), np.asarray(x1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(r4), np.asarray(r1), rtol=1e-6, atol=1e-6)
    assert set(m4) == set(m1)
    for k in m1:
        np.testing.assert_allclose(float(m4[k]), float(m1[k]), rtol=2e-5, atol=1e-6, err_msg=k)
    for a, b in zip(_leaves(s4.student), _leaves(s1.student)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(s1.student), _leaves(state.student)))  # it moved

    c1, cm1 = jax.jit(steps1.critic_step)(s1, frozen, batch, x1, r1)
    c4, cm4 = jax.jit(steps4.critic_step)(s1, frozen, batch, x1, r1)
    for k in cm1:
        np.testing.assert_allclose(float(cm4[k]), float(cm1[k]), rtol=2e-5, atol=1e-6, err_msg=k)
    for a, b in zip(_leaves(c4.critic), _leaves(c1.critic)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

    # several iterations (TTUR 2: generator, critic, sample, critic, ...) stay together
    a, b = run_toy_steps(whole, 6), run_toy_steps(pieces, 6)
    for x, y in zip(_leaves((a.student, a.critic)), _leaves((b.student, b.critic))):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)


def test_micro_batched_steps_on_eight_devices(tmp_path):
    assert len(jax.devices()) == 8
    results = []
    for micro in (1, 2):
        config = _amd_config(micro)
        config.mesh.shape = (4, 2)  # 4 samples per device (batch 32): 2 pieces of 2 rows on every device
        config.teacher.dir = str(tmp_path / "teacher")  # one teacher for both
        session = Session(config, str(tmp_path / f"m{micro}"))
        frozen = session.frozen()
        state = session.initial_state(frozen)
        batch = session.batch(0)
        programs = session.step_programs(frozen, state, batch)
        gen, args = programs["generator"]
        new, x, r, _ = gen(*args)
        crit = programs["critic"][0]
        new, _ = crit(new, frozen, batch, x, r)
        results.append(new)
    for a, b in zip(_leaves((results[0].student, results[0].critic)), _leaves((results[1].student, results[1].critic))):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def _all_gathers(hlo_text: str) -> dict:
    """{'entry': n, 'loops': n}: the all-gathers of the optimized HLO in its ENTRY computation and elsewhere (the
    while loops' bodies and the computations they call)."""
    counts = {"entry": 0, "loops": 0}
    where = None
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            where = "entry" if line.startswith("ENTRY") else "loops"
        elif where and re.search(r" all-gather(-start)?\(", line):
            counts[where] += 1
    return counts


@pytest.mark.parametrize("barrier", [True, False])
def test_weights_are_gathered_inside_the_micro_batch_loop(tmp_path, monkeypatch, barrier):
    """FSDP weights gathered once before the loop would stay whole in memory through every piece; the barrier in
    mean_over_pieces keeps the gathers in the loop. Without it (the second case) XLA hoists them: the check can
    tell the two apart."""
    if not barrier:
        monkeypatch.setattr(jax.lax, "optimization_barrier", lambda x: x)
    config = _amd_config(4)
    config.mesh.shape, config.global_batch = (4, 2), 64  # 8 rows per device, 2 per piece
    config.teacher.dir = str(tmp_path / "teacher")
    session = Session(config, str(tmp_path / "run"))
    frozen = session.frozen()
    state = session.initial_state(frozen)
    programs = session.step_programs(frozen, state, session.batch(0))
    critic = _all_gathers(programs["critic"][0].lower(*programs["critic"][1]).compile().as_text())
    assert critic["loops"] > 0
    if barrier:
        assert critic["entry"] == 0, critic
    else:
        assert critic["entry"] > 0, critic


def test_microbatches_must_divide_the_samples_per_device():
    config = tiny_toy2d_config()
    config.mesh.shape = (4, 2)  # 32 samples over 8 devices: 4 per device
    config.train.microbatches = 3
    with pytest.raises(ConfigError, match="train.microbatches=3 does not divide the 4 samples per device"):
        Session(config, None, training=False)


def test_microbatches_refuse_the_whole_batch_normalizer():
    config = tiny_toy2d_config()
    config.train.microbatches, config.dmd.normalizer = 2, "batch"
    with pytest.raises(ConfigError, match="dmd.normalizer='batch'"):
        Session(config, None, training=False)
