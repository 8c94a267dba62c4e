"""The Wan text-to-video task (amd_jax/tasks/wan) at tiny size, through the real entry points.

- Bad input refused in one line before anything loads: another model's folder, frames not 4k + 1, a side not a
  multiple of 16, a context axis that does not divide the tokens, an empty model.path (through `amd_jax.train`).
- The video reward (models/rewards/video.py) against a NumPy reference of its definition.
- The task's transformers on a data x fsdp x context mesh: the tokens really are split (all-to-all in the compiled
  program) and the result equals the mesh-less task's.
- configs/wan_tiny.py trained by `python -m amd_jax.train` on 8 simulated devices (data 2 x fsdp 2 x context 2),
  checkpointed at steps 2 and 4 on that mesh, and evaluated offline by `python -m amd_jax.evaluate`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import procs
from amd_jax.config import load
from amd_jax.errors import ConfigError

ROOT = procs.REPO
FIX = os.path.join(ROOT, "tests", "fixtures")
TINY = os.path.join(ROOT, "configs", "wan_tiny.py")


def _check(overrides):
    from amd_jax import tasks

    tasks.check(load(TINY, overrides))


# ------------------------------------------------------------------------------------------- checks
@pytest.mark.parametrize("overrides, message", [
    ({"model.frames": 6}, "model.frames=6: Wan's VAE needs 4k + 1 frames"),
    ({"model.height": 40}, "model.height=40: a multiple of 16"),
    # 5 x 48 x 32 px -> latents 2 x 6 x 4 -> 2 x 3 x 2 = 12 tokens; a context axis of 8 does not divide them
    ({"model.height": 48, "mesh.shape": (1, 1, 8), "model.sequence_method": "ring"},
     "the context axis 'context' of size 8 does not divide the 12 tokens"),
    # Ulysses splits the tiny transformer's 2 heads: a context axis of 4 cannot
    ({"mesh.shape": (2, 1, 4)}, "splits the 2 heads over the context axis 'context' of size 4"),
    ({"mesh.batch_axes": ("data", "context")}, "the context axis splits each sample's tokens"),
    ({"reward.latent_frames": 3}, "reward.latent_frames=3: at most the video's 2 latent frames (model.frames=5)"),
])
def test_bad_geometry_and_mesh_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        _check(overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_another_models_folder_refused_before_loading(tmp_path):
    """A folder whose vae/ is SDXL's, or whose transformer/ is a UNet: the loaders' config checks, no tensor read."""
    folder = tmp_path / "model"
    shutil.copytree(os.path.join(FIX, "wan_task_tiny"), folder, symlinks=False)
    shutil.rmtree(folder / "vae")
    shutil.copytree(os.path.join(FIX, "sdxl_tiny", "vae"), folder / "vae")
    with pytest.raises(ConfigError) as e:
        _check({"model.path": str(folder)})
    assert "AutoencoderKL, not" in str(e.value) and "\n" not in str(e.value)
    shutil.rmtree(folder / "transformer")
    shutil.copytree(os.path.join(FIX, "sdxl_tiny", "unet"), folder / "transformer")
    with pytest.raises(ConfigError, match="is a UNet2DConditionModel, not a WanTransformer3DModel"):
        _check({"model.path": str(folder)})
    with pytest.raises(ConfigError, match="has no transformer/config.json"):
        _check({"model.path": str(tmp_path)})


def test_empty_model_path_refused_by_train_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "amd_jax.train", "--config=configs/wan21_t2v.py", f"--workdir={tmp_path / 'run'}"]
    res = subprocess.run(cmd, cwd=ROOT, env=procs._env(8), capture_output=True, text=True, timeout=240)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "model.path is empty" in res.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------------------------------- data
def test_caption_batches_tokens_groups_and_eval_conds():
    """The batch carries the tokenizer's ids and mask of each row's caption (T5 conventions: words, then </s>,
    then padding 0), K = amd.group_size rows per caption in a row, and the evaluation conditions likewise."""
    from amd_jax import tasks
    from amd_jax.data import prompts as P

    config = load(TINY, {"amd.group_size": 2})
    task = tasks.build(config)
    batch = task.data.global_batch(3, 4)["cond"]
    prompts = task.data.prompts(3, 4)
    assert prompts[0] == prompts[1] and prompts[2] == prompts[3] and prompts[0] != prompts[2]
    vocab = json.loads(open(os.path.join(FIX, "wan_task_tiny", "tokenizer", "tokenizer.json")).read())
    vocab = vocab["model"]["vocab"]
    for row, prompt in enumerate(prompts):
        words = [vocab[w] for w in prompt.lower().split()] + [1]
        want = np.zeros(config.model.text_len, np.int32)
        want[:len(words)] = words
        np.testing.assert_array_equal(batch["input_ids"][row], want)
        assert batch["attention_mask"][row].sum() == len(words)
    assert batch["reward_tokens"].shape == (4, 16)
    cond = task.eval_conds(5)
    caps = P.read_captions(os.path.join(FIX, "captions_tiny.txt"))
    assert cond["input_ids"].shape == (5, 16)
    np.testing.assert_array_equal(cond["input_ids"][4], task.data.encode([caps[4]])["input_ids"][0])


def test_precomputed_embeddings_real_latents_and_the_gan_head(tmp_path):
    """data.embeddings ('text' per caption) replaces the on-mesh encoder; data.real gives each row its caption's
    latents; the GAN head reads the critic's last-block tokens, one logit per sample."""
    from amd_jax import tasks
    from amd_jax.data import prompts as P

    caps = P.read_captions(os.path.join(FIX, "captions_tiny.txt"))
    n = len(caps)
    text = np.random.RandomState(0).randn(n, 16, 32).astype(np.float32)
    real = np.arange(n, dtype=np.float32)[:, None, None, None, None] * np.ones((1, 2, 4, 4, 4), np.float32)
    np.savez(tmp_path / "emb.npz", text=text)
    np.save(tmp_path / "real.npy", real)
    config = load(TINY, {"data.embeddings": str(tmp_path / "emb.npz"), "data.real": str(tmp_path / "real.npy"),
                         "gan.enabled": True})
    tasks.check(config)
    task = tasks.build(config)
    assert task.condition is None  # nothing to encode on the mesh
    batch = task.data.global_batch(2, 4)
    idx = [caps.index(p) for p in task.data.prompts(2, 4)]
    np.testing.assert_array_equal(batch["cond"]["text"], text[idx])
    np.testing.assert_array_equal(batch["real"][:, 0, 0, 0, 0], np.asarray(idx, np.float32))
    m = task.models
    params = jax.tree_util.tree_map(jnp.asarray, task.teacher())
    x = jnp.asarray(batch["real"])
    _, feats = m.critic.x0_and_features(params, x, jnp.full((4,), 0.5), {"text": jnp.asarray(batch["cond"]["text"])})
    assert feats.shape == (4, 8, 32)  # latents 2 x 4 x 4 in 1 x 2 x 2 patches: 8 tokens of width 32
    logits = m.gan_head(m.init_gan_head(jax.random.PRNGKey(0)), feats)
    assert logits.shape == (4,) and np.all(np.isfinite(np.asarray(logits)))
    bad = tmp_path / "bad.npy"
    np.save(bad, real[:, :1])
    with pytest.raises(ConfigError, match=r"data.real latents have shape \(1, 4, 4, 4\), the model needs"):
        tasks.build(load(TINY, {"data.real": str(bad), "gan.enabled": True}))


# ------------------------------------------------------------------------------------------- reward
def test_video_reward_against_numpy():
    from amd_jax.models.rewards.video import frame_indices, temporal_smoothness, video_reward

    assert frame_indices(81, 4).tolist() == [0, 27, 53, 80] and frame_indices(5, 1).tolist() == [2]
    assert frame_indices(3, 8).tolist() == [0, 1, 2]
    rng = np.random.RandomState(0)
    video = rng.uniform(-1, 1, (3, 5, 4, 6, 3)).astype(np.float32)
    tokens = np.arange(3 * 2, dtype=np.int32).reshape(3, 2)

    def score(params, images, toks):  # a stand-in scorer: depends on the image and on its row's tokens
        return jnp.mean(images, axis=(1, 2, 3)) * params + toks[:, 0]

    got = np.asarray(video_reward(score, 2.0, jnp.asarray(video), jnp.asarray(tokens), 3, temporal_weight=0.5))
    frames = video[:, [0, 2, 4]]
    per_frame = frames.mean(axis=(2, 3, 4)) * 2.0 + tokens[:, :1]
    smooth = 1 - 0.5 * np.abs(np.diff(video, axis=1)).mean(axis=(1, 2, 3, 4))
    np.testing.assert_allclose(got, per_frame.mean(1) + 0.5 * smooth, rtol=1e-5)
    still = np.repeat(video[:, :1], 5, axis=1)
    np.testing.assert_allclose(np.asarray(temporal_smoothness(jnp.asarray(still))), 1.0)


def test_reward_latent_frames_decodes_only_the_prefix():
    """reward.latent_frames=1: the task's reward is the per-frame reward of the first latent frame's decode alone
    (video frame 0), not of the whole video's."""
    from amd_jax import tasks
    from amd_jax.models.rewards.video import video_reward
    from amd_jax.models.wan import vae as wan_vae
    from amd_jax.tasks.wan.assets import Assets

    config = load(TINY, {"reward.latent_frames": 1, "mesh.shape": (1, 1, 1)})
    task, assets = tasks.build(config), Assets(config)
    params, score, vae = task.reward(), assets.scorer().score, assets.vae_module()
    latents = jax.random.normal(jax.random.PRNGKey(0), (2, *task.models.sample_shape), jnp.float32)
    tokens = jnp.ones((2, 4), jnp.int32)

    @jax.jit
    def run(params, latents, tokens):
        def direct(frames):  # the reward of the decode of `frames` latent frames, written out
            video = wan_vae.decode(vae, params["vae"], latents[:, :frames])
            return video_reward(score, params["scorer"], video, tokens, config.reward.frames,
                                config.reward.temporal_weight)

        return task.models.reward(params, latents, {"reward_tokens": tokens}), direct(1), direct(None)

    got, first, whole = (np.asarray(a) for a in run(params, latents, tokens))
    np.testing.assert_allclose(got, first, rtol=1e-5)
    assert not np.allclose(got, whole, rtol=1e-3)


# ------------------------------------------------------------------------------------------- context axis
def test_task_transformer_splits_tokens_over_the_context_axis():
    """The task's teacher on the config's data 2 x fsdp 2 x context 2 mesh: all-to-all in the compiled program
    (Ulysses), and the same output as the mesh-less task's transformer."""
    from amd_jax import tasks
    from amd_jax.parallel import mesh as mesh_lib

    config = load(TINY)
    mesh = mesh_lib.make_mesh(config.mesh.axes, config.mesh.shape)
    sharded = tasks.build(config, mesh)
    plain = tasks.build(config)
    params = jax.tree_util.tree_map(jnp.asarray, sharded.teacher())
    rng = np.random.RandomState(1)
    x = rng.randn(4, *sharded.models.sample_shape).astype(np.float32)
    text = rng.randn(4, config.model.text_len, 32).astype(np.float32)
    t = np.asarray([0.9, 0.5, 0.3, 0.1], np.float32)
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    args = [jax.device_put(a, rows) for a in (x, t, text)]

    def fn(p, x_, t_, text_):
        return sharded.models.teacher.apply_fn(p, x_, t_, {"text": text_})

    hlo = jax.jit(fn).lower(params, *args).compile().as_text()
    assert "all-to-all" in hlo
    got = np.asarray(jax.jit(fn)(params, *args))
    want = np.asarray(plain.models.teacher.apply_fn(params, x, t, {"text": text}))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------- end to end
def test_wan_tiny_trains_on_a_context_mesh_and_evaluates_offline(tmp_path):
    run = tmp_path / "run"
    with procs.Train(run, [f"--config={TINY}"], devices_per_process=8) as train:
        assert train.wait(600) == [0], train.out()[-3000:]
    from amd_jax import checkpoint as ckpt_lib

    ck = ckpt_lib.Checkpointer(str(run), 3, False, read_only=True)
    assert ck.steps() == [2, 4]
    meta = ck.restore_meta(4)
    ck.close()
    assert meta["mesh"] == {"data": 2, "fsdp": 2, "context": 2}  # saved by the session that trained on it
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    gen = [r for r in records if "train/loss_generator" in r]  # TTUR 2: the student's update at steps 1 and 3
    assert [r["step"] for r in gen] == [1, 3]
    assert all(np.isfinite(r["train/loss_generator"]) and np.isfinite(r["train/reward_mean"]) for r in gen)
    assert all(np.isfinite(r["train/loss_critic"]) for r in records if "train/loss_critic" in r)

    cmd = [sys.executable, "-m", "amd_jax.evaluate", f"--config={TINY}", f"--workdir={run}",
           "--config.eval.save_images=True"]
    res = subprocess.run(cmd, cwd=ROOT, env=procs._env(8), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((run / "eval" / "eval_0000004.json").read_text())
    assert metrics["step"] == 4 and metrics["num_samples"] == 4
    for k in ("reward_mean", "reward_std", "temporal_smoothness"):
        assert np.isfinite(metrics[k]), k
    assert 0 < metrics["temporal_smoothness"] <= 1
    assert (run / "eval" / "samples_0000004.png").exists()
    # every video as an animated GIF of the decoded frames (5 frames of 32 x 32) and its frame strip (3 frames)
    from PIL import Image

    saved = run / "eval" / "images_0000004"
    prompts = (saved / "prompts.txt").read_text().splitlines()
    assert prompts == open(os.path.join(FIX, "captions_tiny.txt")).read().splitlines()[:4]
    gif = Image.open(saved / "000003.gif")
    assert gif.n_frames == 5 and gif.size == (32, 32)
    strip = np.asarray(Image.open(saved / "000003_strip.png"))
    assert strip.shape == (32, 3 * 32, 3) and strip.std() > 0


# ------------------------------------------------------------------------------------------- full size
def test_wan21_t2v_abstract_task_by_shape():
    """configs/wan21_t2v.py as the plan builds it (no file read): 81 x 480 x 832 -> latents 21 x 60 x 104 x 16,
    32,760 tokens; the frozen teacher in bf16 with the 1.3B architecture's every parameter; the batch's text
    embeddings [B, 512, 4096]."""
    from amd_jax import tasks
    from amd_jax.models.wan.transformer import param_count
    from amd_jax.tasks.wan import checks

    config = load(os.path.join(ROOT, "configs", "wan21_t2v.py"), {"reward.name": "", "method": "dmd2",
                                                                  "reward.monitor": False})
    tasks.check(config, abstract=True)
    task = tasks.build(config, abstract=True)
    assert task.models.sample_shape == (21, 60, 104, 16)
    assert checks.tokens_of(task.models.sample_shape, (1, 2, 2)) == 32_760
    frozen = task.abstract_frozen()
    leaves = jax.tree_util.tree_leaves(frozen["teacher"])
    assert frozen["reward"] is None and all(a.dtype == jnp.bfloat16 for a in leaves)
    assert sum(int(np.prod(a.shape)) for a in leaves) == param_count()
    batch = task.abstract_batch(16)
    assert batch["cond"]["text"].shape == (16, 512, 4096) and batch["real"].shape == (16, 1)
    assert config.student.timesteps[0] == 1.0 and len(config.student.timesteps) == 3
    assert config.dmd.guidance_scale == 5.0
