"""zones2d, the benchmark with a Forbidden Zone by construction (configs/zones2d.py).

- The ground-truth zone membership matches hand-placed points (the zone is the disc of 3 std around class 0's
  mode at (2, 0); any label but 0 is wrong there).
- The teacher's data relabel exactly the zone mode's points; the distillation's data stay clean.
- The reward proxy is not the ground truth: it prefers a zone sample to an off-zone one, and differs from the
  clean log-density.
- The training step's probe averages the teacher gaps over the zone's samples and the others.
- A tiny run through the trainer on 8 simulated devices writes the zone metrics and curves.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax import tasks
from amd_jax.config import load
from amd_jax.data.toy2d import Toy2D
from amd_jax.data.zones2d import NoisyTeacherData, Zone
from amd_jax.loop import train
from amd_jax.tasks.zones2d.models import proxy_reward
from amd_jax.session import Session
from amd_jax.steps import Steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = Toy2D(num_classes=4, modes_per_class=2, radius=2.0, std=0.15)  # class 0's mode 0 sits at (2, 0)
ZONE = Zone(source_class=0, source_mode=0, target_class=1, flip=1.0, radius_std=3.0)  # radius 0.45


def tiny_config():
    return load(os.path.join(ROOT, "configs", "zones2d.py"), {
        "total_steps": 12, "global_batch": 32, "model.hidden": 32, "model.depth": 1, "teacher.steps": 200,
        "teacher.batch_size": 128, "dmd.ttur": 2, "optim.warmup_steps": 2, "sharding.fsdp_min_size": 256,
        "checkpoint.every": 4, "log.every": 4, "log.sample_every": 8, "eval.num_samples": 256,
        "mesh.shape": (4, 2)})


def test_ground_truth_zone_membership_on_hand_placed_points():
    x = np.array([[2.0, 0.0], [2.0, 0.0], [2.0, 0.44], [1.56, 0.0], [2.0, 0.46], [2.0, 0.0], [1.414, 1.414],
                  [0.0, 0.0]], np.float32)
    labels = np.array([1, 0, 2, 3, 1, 3, 1, 1])
    # in R, R's owner, in, in, just outside, in, class 1's own mode, the ring's centre
    want = [True, False, True, True, False, True, False, False]
    assert ZONE.in_zone(DATA, x, labels).tolist() == want
    assert np.asarray(ZONE.in_zone(DATA, jnp.asarray(x), jnp.asarray(labels))).tolist() == want  # traced too


def test_the_teacher_data_relabel_only_the_zone_mode():
    clean = DATA
    for flip, lo, hi in ((1.0, 1.0, 1.0), (0.5, 0.35, 0.65)):
        noisy = NoisyTeacherData(clean, Zone(flip=flip))
        moved, kept = 0, 0
        for step in range(4):
            a, b = clean.global_batch(step, 512), noisy.global_batch(step, 512)
            assert np.array_equal(a["real"], b["real"])
            near = np.linalg.norm(a["real"] - [2.0, 0.0], axis=1) < 1.0  # the zone mode's points, by hand
            changed = a["cond"]["label"] != b["cond"]["label"]
            assert not np.any(changed & ~near)  # nothing else changes
            assert np.all(a["cond"]["label"][near] == 0) and np.all(b["cond"]["label"][changed] == 1)
            moved, kept = moved + changed.sum(), kept + (near & ~changed).sum()
        assert lo <= moved / (moved + kept) <= hi
    batch = tasks.build(tiny_config()).data.global_batch(0, 512)  # the distillation's data are clean
    near = np.linalg.norm(batch["real"] - [2.0, 0.0], axis=1) < 1.0
    assert near.any() and np.all(batch["cond"]["label"][near] == 0)


def test_the_reward_proxy_is_not_the_ground_truth():
    reward = proxy_reward(DATA, std_scale=2.0, noise=1.0, length=0.5)
    zone_sample, off_zone_sample = np.array([[2.0, 0.0]], np.float32), np.array([[0.0, 0.0]], np.float32)
    one = jnp.array([1])
    assert ZONE.in_zone(DATA, zone_sample, np.array([1]))[0]
    assert not ZONE.in_zone(DATA, off_zone_sample, np.array([1]))[0]
    # the proxy scores the zone sample higher: it ranks by (widened) density, not by zone membership
    assert float(reward(jnp.asarray(zone_sample), one)[0]) > float(reward(jnp.asarray(off_zone_sample), one)[0])
    x = jnp.asarray(np.random.default_rng(0).uniform(-3, 3, (2000, 2)), jnp.float32)
    labels = jnp.asarray(np.random.default_rng(1).integers(0, 4, 2000))
    field = np.asarray(reward(x, labels) - Toy2D(std=0.3).log_density(x, labels))
    assert 0.7 < field.std() < 1.3  # the fixed random field has about the std `noise` = 1
    noiseless = proxy_reward(DATA, std_scale=2.0, noise=0.0, length=0.5)
    assert np.allclose(noiseless(x, labels), Toy2D(std=0.3).log_density(x, labels), rtol=1e-5, atol=1e-4)


def test_zone_probe_averages_the_gaps_inside_and_outside_the_zone():
    config = tiny_config()
    steps = Steps(config, tasks.build(config).models)
    x = jnp.array([[2.0, 0.0], [2.1, 0.0], [0.0, 0.0], [1.0, 1.0]])
    cond = {"label": jnp.array([1, 2, 1, 0])}  # the first two are in the zone
    xf = x + jnp.array([[0.0, 0.0], [0.3, 0.4], [3.0, 4.0], [0.0, 1.0]])  # |xf - x| = 0, 0.5, 5, 1
    xr_c, xr_u = xf + 1.0, xf + 0.5  # omega 2: xr_cfg = xr_u + 2 (xr_c - xr_u) = xf + 1.5: |.| = 1.5 sqrt(2)
    got = steps._zone_probe(x, cond, xr_c, xr_u, xf)
    want = {"gt_zone/batch_fraction": 0.5, "gt_zone/xf_minus_x": 0.25, "gt_out/xf_minus_x": 3.0,
            "gt_zone/cfg_minus_xf": 1.5 * np.sqrt(2), "gt_out/cfg_minus_xf": 1.5 * np.sqrt(2)}
    assert set(got) == set(want)
    for k, v in want.items():
        assert float(got[k]) == pytest.approx(v, rel=1e-6), k
    assert set(steps._zone_probe(x, cond, xr_c, None, xf)) == {"gt_zone/batch_fraction", "gt_zone/xf_minus_x",
                                                               "gt_out/xf_minus_x"}
    toy = load(os.path.join(ROOT, "configs", "toy2d_tiny.py"))
    assert Steps(toy, tasks.build(toy).models)._zone_probe(x, cond, xr_c, xr_u, xf) == {}  # no zone, no probe


def test_tiny_run_on_eight_devices(tmp_path):
    config = tiny_config()
    state = train(Session(config, str(tmp_path)))
    assert len(jax.tree_util.tree_leaves(state.student)[0].sharding.device_set) == 8
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for key in ("gt_zone_fraction", "flag_recall", "flag_precision", "zone_fraction", "precision", "recall", "swd"):
        assert np.isfinite(metrics[key]) and (key == "swd" or 0.0 <= metrics[key] <= 1.0), key
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/samples/gt_zone_fraction" in r for r in rows)
    assert any("train/gt_zone/xf_minus_x" in r and "train/gt_out/cfg_minus_xf" in r for r in rows)
    teacher = json.loads((tmp_path / "teacher" / "eval.json").read_text())
    assert 0.0 <= teacher["gt_zone_fraction"] <= 1.0 and teacher["sampler"] == "ddim50"
