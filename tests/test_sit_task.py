"""The ImageNet / SiT task (amd_jax/tasks/imagenet): its label and latent batches, its config errors, configs/sit_tiny.py
through the trainer on 8 simulated devices with FSDP and the offline evaluation of its checkpoint, and configs/
sit_xl2.py's full training state by shape (parameters, bytes per device under the config's FSDP)."""

from __future__ import annotations

import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType

from amd_jax.config import load
from tiny import step_metrics
from amd_jax.data.latents import LatentLabels, read_real
from amd_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "sit_tiny.py")


def _real_latents(path, n_per_class=2, classes=10, shape=(8, 8, 4)):
    """Real latents whose every value is their label (so a batch row shows which class it was drawn from)."""
    labels = np.repeat(np.arange(classes), n_per_class).astype(np.int32)
    latents = np.broadcast_to(labels[:, None, None, None], (len(labels),) + shape).astype(np.float32)
    np.savez(path, latents=latents, labels=labels)
    return str(path)


# ------------------------------------------------------------------------------------------------- data
def test_label_batches_are_grouped_pure_and_real_rows_match_their_label(tmp_path):
    latents, labels = read_real(_real_latents(tmp_path / "real.npz"), (8, 8, 4), 10)
    data = LatentLabels(10, (8, 8, 4), seed=3, real=latents, real_labels=labels).grouped(4)
    a, b = data.global_batch(7, 16), data.global_batch(7, 16)
    np.testing.assert_array_equal(a["cond"]["label"], b["cond"]["label"])
    lab = a["cond"]["label"].reshape(4, 4)
    assert (lab == lab[:, :1]).all()  # K = 4 consecutive rows share a label
    np.testing.assert_array_equal(a["real"][:, 0, 0, 0], a["cond"]["label"])  # each row's real latent: its class
    assert not np.array_equal(data.global_batch(8, 16)["cond"]["label"], a["cond"]["label"])
    plain = LatentLabels(10, (8, 8, 4), seed=3).global_batch(0, 16)
    assert plain["real"].shape == (16, 1) and plain["cond"]["label"].dtype == np.int32


def test_real_latents_errors(tmp_path):
    nchw = tmp_path / "nchw.npz"
    np.savez(nchw, latents=np.zeros((10, 4, 8, 8), np.float32), labels=np.arange(10))
    with pytest.raises(ConfigError, match="NCHW"):
        read_real(str(nchw), (8, 8, 4), 10)
    few = tmp_path / "few.npz"
    np.savez(few, latents=np.zeros((3, 8, 8, 4), np.float32), labels=np.arange(3))
    with pytest.raises(ConfigError, match="no latent of 7 classes"):
        read_real(str(few), (8, 8, 4), 10)
    nolab = tmp_path / "nolab.npz"
    np.savez(nolab, latents=np.zeros((3, 8, 8, 4), np.float32))
    with pytest.raises(ConfigError, match="'labels'"):
        read_real(str(nolab), (8, 8, 4), 10)


@pytest.mark.parametrize("override, match", [
    ({"schedule.name": "ddpm"}, "rectified_flow"),
    ({"model.vae_path": ""}, "model.vae_path is empty"),
    ({"reward.path": ""}, "reward.path"),
    ({"gan.enabled": True}, "gan.enabled needs data.real"),
    ({"eval.reference": "/x/ref.npz"}, "eval.inception"),
    ({"model.compute_dtype": "float16"}, "compute_dtype"),
])
def test_config_errors_before_anything_loads(override, match):
    from amd_jax import tasks

    with pytest.raises(ConfigError, match=match):  # validate runs it, first thing in a Session
        tasks.check(load(TINY, override))


def test_teacher_architecture_must_match_the_file():
    from amd_jax import tasks

    task = tasks.build(load(TINY, {"model.arch.depth": 3}))
    with pytest.raises(ConfigError, match="depth"):
        task.teacher()


# -------------------------------------------------------------------------------------------- tiny run
def test_sit_tiny_trains_with_fsdp_and_its_checkpoint_evaluates(tmp_path, caplog):
    from amd_jax.evaluate import Evaluator
    from amd_jax.loop import train
    from amd_jax.models.sit import weights as sit_weights
    from amd_jax.session import Session

    assert jax.device_count() == 8
    config = load(TINY, {"total_steps": 3, "checkpoint.every": 3, "checkpoint.async_save": False,
                         "gan.enabled": True, "data.real": _real_latents(tmp_path / "real.npz")})
    caplog.set_level(logging.INFO, logger="amd_jax")
    session = Session(config, str(tmp_path / "run"))
    assert session.models.sample_shape == (8, 8, 4)
    state = train(session)
    m1, m2 = step_metrics(tmp_path / "run", 1), step_metrics(tmp_path / "run", 2)
    for k in ("loss_dm", "loss_critic", "reward_mean", "grad_norm_student", "loss_gan_generator"):
        assert np.isfinite(m1[k]), (k, m1[k])
    assert m1["grad_norm_student"] > 0 and m1["reward_std"] > 0 and 0 <= m1["zone_fraction"] <= 1
    assert "loss_dm" not in m2 and m2["grad_norm_critic"] > 0  # TTUR 2: critic only at step 1

    # student and critic moved away from the teacher they started from
    _, teacher = sit_weights.load_sit(config.model.path)
    for name, tree in (("student", state.student), ("critic", state.critic["denoiser"])):
        moved = [float(np.max(np.abs(np.asarray(a) - b)))
                 for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(teacher))]
        assert max(moved) > 0, name
    # FSDP: the large kernels are split over 'fsdp'
    leaves = jax.tree_util.tree_leaves(state.student)
    sharded = [a for a in leaves if "fsdp" in jax.tree_util.tree_leaves(tuple(a.sharding.spec))]
    assert len(sharded) >= 8, len(sharded)
    a = max(sharded, key=lambda x: x.size)
    assert math.prod(a.addressable_shards[0].data.shape) * 2 == a.size

    # the offline evaluation job on that checkpoint: the student's samples, rewards and zones, images saved
    config.eval.save_images = True
    metrics = Evaluator(config, str(tmp_path / "run")).evaluate(3)
    assert metrics["step"] == 3 and metrics["num_samples"] == 8
    assert np.isfinite(metrics["reward_mean"]) and 0 <= metrics["zone_fraction"] <= 1
    assert len(list((tmp_path / "run" / "eval" / "images_0000003").glob("*.png"))) == 8


# ------------------------------------------------------------------------------------------- full size
def test_full_sit_xl2_state_shapes_and_fsdp_bytes_per_device():
    """configs/sit_xl2.py's whole training state by shape, and its per-device bytes under the config's sharding."""
    from amd_jax import tasks
    from amd_jax.models.sit import network as sit
    from amd_jax.parallel.sharding import tree_shardings
    from amd_jax.steps import Steps

    config = load(os.path.join(ROOT, "configs", "sit_xl2.py"), {"model.vae_path": "/unused", "reward.path": "/x"})
    assert config.global_batch == 256 and config.model.arch.depth == 28 and config.model.arch.hidden_size == 1152
    models = tasks.build(config).models
    assert models.sample_shape == (32, 32, 4)
    key = jax.random.PRNGKey(0)
    teacher = jax.eval_shape(models.init_denoiser, key)
    n = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(teacher))
    assert n + 256 * 1152 == sit.param_count(sit.SiTConfig(**config.model.arch.to_dict()), True) == 675_129_632
    state = jax.eval_shape(Steps(config, models).init, teacher, key)
    teacher_bf16 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.bfloat16), teacher)
    trees = {"student": state.student, "critic": state.critic, "student_opt": state.student_opt,
             "critic_opt": state.critic_opt, "student_ema": state.student_ema, "teacher_bf16": teacher_bf16}
    nbytes = lambda a: math.prod(a.shape) * jnp.dtype(a.dtype).itemsize
    total = {k: sum(nbytes(a) for a in jax.tree_util.tree_leaves(t)) for k, t in trees.items()}
    assert total["student"] == total["student_ema"] == 4 * n and total["student_opt"] >= 8 * n
    grand = sum(total.values())
    print(f"\nSiT-XL/2 state: {grand / 2**30:.2f} GiB " + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in total.items()))
    fsdp = config.mesh.shape[1]
    for n_dev in (32, 64):
        mesh = AbstractMesh((n_dev // fsdp, fsdp), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
        per_dev = 0
        for t in trees.values():
            sh = tree_shardings(t, mesh, tuple(config.sharding.rules), config.sharding.fsdp_min_size)
            per_dev += sum(math.prod(s.shard_shape(a.shape)) * jnp.dtype(a.dtype).itemsize
                           for a, s in zip(jax.tree_util.tree_leaves(t), jax.tree_util.tree_leaves(sh)))
        print(f"{n_dev} devices (data={n_dev // fsdp}, fsdp={fsdp}): {per_dev / 2**30:.3f} GiB per device")
        assert grand / fsdp <= per_dev < 1.05 * grand / fsdp  # nearly everything is split fsdp ways
