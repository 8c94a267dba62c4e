"""Per-condition groups (amd.group_size = K): every data pipeline puts each condition on K consecutive rows of the
global batch, K = 1 keeps the batches of before groups existed bit for bit, and AMD's advantage is then a statistic
of each condition's own samples."""

import os
import sys
import types

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax import tasks
from amd_jax.config import load, validate
from amd_jax.data import prompts as P
from amd_jax.data.mnist import ImageData, load_digits_split
from amd_jax.data.toy2d import Toy2D
from amd_jax.errors import ConfigError
from amd_jax.loop import train
from amd_jax.session import Session
from tiny import ROOT, tiny_toy2d_config, toy_steps

CAPTIONS = os.path.join(os.path.dirname(__file__), "fixtures", "captions_tiny.txt")


def _assert_same(a, b):
    """Two batches (pytrees of host arrays) are equal bit for bit, dtypes included."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def _groups_of(values, k):
    """[B, ...] -> [B / K, K, ...]; asserts the K rows of every group are equal and returns one row per group."""
    g = np.asarray(values).reshape((-1, k) + np.shape(values)[1:])
    np.testing.assert_array_equal(g, np.broadcast_to(g[:, :1], g.shape))
    return g[:, 0]


# ---------------------------------------------------------------------- today's batch functions (before groups)
def _toy2d_batch_before(data: Toy2D, step, batch_size):
    rng = np.random.default_rng([data.seed, step])
    labels = rng.integers(0, data.num_classes, size=batch_size).astype(np.int32)
    return {"cond": {"label": labels}, "real": data.sample(rng, labels)}


def _image_batch_before(data: ImageData, step, batch_size):
    rng = np.random.default_rng([data.seed, step])
    idx = rng.integers(0, len(data.train_y), size=batch_size)
    return {"cond": {"label": data.train_y[idx]}, "real": data.train_x[idx]}


def _prompts_before(captions, seed, step, batch_size):
    ds = grain.MapDataset.range(len(captions)).shuffle(seed=seed).repeat(None)
    return [captions[int(ds[step * batch_size + r])] for r in range(batch_size)]


# ----------------------------------------------------------------------------------------------- toy2d
def test_toy2d_groups_of_labels_and_unchanged_without_groups():
    data = Toy2D(seed=3)
    for step in (0, 7):
        _assert_same(data.global_batch(step, 32), _toy2d_batch_before(data, step, 32))
        _assert_same(data.grouped(0).global_batch(step, 32), _toy2d_batch_before(data, step, 32))
    grouped = data.grouped(4)
    b = grouped.global_batch(5, 128)
    labels = _groups_of(b["cond"]["label"], 4)
    assert labels.shape == (32,) and set(labels) == set(range(4))  # 32 draws: every class, so groups differ
    assert b["cond"]["label"].dtype == np.int32
    # each row's real sample is its own draw of p(x | the row's label): near a mode of that label, K different ones
    real = b["real"].reshape(32, 4, 2)
    assert np.all(np.abs(real[:, 1:] - real[:, :1]).max(axis=-1) > 0)
    assert float(np.min(np.asarray(data.log_density(b["real"], b["cond"]["label"])))) > -10.0
    _assert_same(b, grouped.global_batch(5, 128))  # a pure function of (seed, step)
    assert not np.array_equal(grouped.global_batch(6, 128)["cond"]["label"], b["cond"]["label"])
    with pytest.raises(ValueError, match="groups of 4"):
        grouped.global_batch(0, 30)


# ------------------------------------------------------------------------------------- digits / MNIST
def test_image_data_groups_of_labels_with_independent_real_images():
    data = ImageData(*load_digits_split(), seed=2)
    for step in (0, 7):
        _assert_same(data.global_batch(step, 16), _image_batch_before(data, step, 16))
    grouped = data.grouped(4)
    b = grouped.global_batch(3, 64)
    labels = _groups_of(b["cond"]["label"], 4)
    assert len(set(labels)) > 1
    # every real row is a train image of its row's label (found by content in the train split)
    flat = data.train_x.reshape(len(data.train_x), -1)
    for row, label in zip(b["real"].reshape(64, -1), b["cond"]["label"]):
        match = np.flatnonzero(np.all(flat == row, axis=1))
        assert match.size and np.all(data.train_y[match] == label)
    # the K images of a group are independent draws: nearly all differ (about 140 train images per digit)
    distinct = {row.tobytes() for row in b["real"].reshape(64, -1)}
    assert len(distinct) >= 56
    _assert_same(b, grouped.global_batch(3, 64))


# ------------------------------------------------------------------------- the step's group advantage
def _numpy_advantage_by_label(labels, rewards, k, std_floor, eps, clip):
    """z-score of each reward within its group: consecutive rows of one label, at most K of them (rows with the
    same label in another group are another group), population std; clipped."""
    out, start = np.zeros(len(rewards)), 0
    while start < len(rewards):
        end = start + 1
        while end < len(rewards) and end - start < k and labels[end] == labels[start]:
            end += 1
        r = np.asarray(rewards[start:end], np.float64)
        out[start:end] = np.clip((r - r.mean()) / (max(r.std(), std_floor) + eps), -clip, clip)
        start = end
    return out


def test_generator_step_advantage_is_per_condition():
    config = tiny_toy2d_config(**{"amd.group_size": 4})
    steps, frozen, state, data = toy_steps(config)
    batch = jax.tree_util.tree_map(jnp.asarray, data.global_batch(0, config.global_batch))
    labels = np.asarray(batch["cond"]["label"])
    _groups_of(labels, 4)
    _, x, rewards, metrics = jax.jit(steps.generator_step)(state, frozen, batch)
    x, rewards = np.asarray(x), np.asarray(rewards)
    assert np.all(np.abs(x.reshape(8, 4, 2)[:, 1:] - x.reshape(8, 4, 2)[:, :1]).max(-1) > 0)  # noise per row
    a = config.amd
    adv = np.asarray(steps.advantage(jnp.asarray(rewards))[0])
    want = _numpy_advantage_by_label(labels, rewards, 4, a.std_floor, a.adv_eps, a.adv_clip)
    assert len(np.unique(np.round(want, 4))) > 2  # not a degenerate all-clipped case
    np.testing.assert_allclose(adv, want, rtol=1e-4, atol=1e-5)
    # the step itself normalised per group of 4: its logged mean group std is that of the label groups
    np.testing.assert_allclose(float(metrics["group_std_mean"]), rewards.reshape(8, 4).std(axis=1).mean(),
                               rtol=1e-4)
    assert not np.isclose(float(metrics["group_std_mean"]), rewards.std(), rtol=1e-2)


def test_groups_spanning_devices_train_as_on_one_device(tmp_path):
    """Groups of 8 on 8 devices holding 4 rows each: every group spans two devices, and the run's parameters are
    those of the same run on one device (the advantage is a statistic of the global batch under jit)."""
    assert len(jax.devices()) == 8
    config = tiny_toy2d_config(**{"amd.group_size": 8, "total_steps": 4, "log.sample_every": 0, "eval.at_end": False})
    config.teacher.dir = str(tmp_path / "teacher")
    config.mesh.shape = (4, 2)
    state8 = train(Session(config, str(tmp_path / "eight")))
    one = config.copy_and_resolve_references()
    one.mesh.shape = (1, 1)
    state1 = train(Session(one, str(tmp_path / "one"), devices=jax.devices()[:1]))
    for a, b in zip(jax.tree_util.tree_leaves((state8.student, state8.critic)),
                    jax.tree_util.tree_leaves((state1.student, state1.critic))):
        assert len(a.sharding.device_set) == 8
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)


# ------------------------------------------------------------------------------------------ SDXL prompts
def _fake_encode(prompts):
    codes = np.asarray([[len(p), sum(map(ord, p))] for p in prompts], np.float32)
    return {"prompt_embeds": codes[:, None, :] * np.ones((1, 3, 1), np.float32), "text_embeds": codes[:, :1]}


def _counting_encoder(calls):
    def encode(prompts):
        calls.append(list(prompts))
        return _fake_encode(prompts)

    return encode


def test_prompt_source_pairs_of_identical_prompts_and_embeddings():
    caps = P.read_captions(CAPTIONS)
    calls = []
    src = P.PromptSource(caps, 1, encode=_counting_encoder(calls), constants={"time_ids": np.arange(6.0)},
                         group_size=2)
    b = src.global_batch(1, 8)
    assert len(calls) == 1 and len(calls[0]) == 4  # each of the 4 captions encoded once
    pairs = _groups_of(np.asarray(src.prompts(1, 8)), 2)
    assert len(set(pairs)) == 4
    for v in b["cond"].values():
        _groups_of(v, 2)
    np.testing.assert_array_equal(b["cond"]["prompt_embeds"], _fake_encode(src.prompts(1, 8))["prompt_embeds"])
    # an epoch (12 captions) is 3 steps of 4 captions; resumption: a fresh source gives the same batch
    epoch = [p for s in range(3) for p in src.prompts(s, 8)[::2]]
    assert sorted(epoch) == sorted(caps)
    fresh = P.PromptSource(caps, 1, encode=_fake_encode, constants={"time_ids": np.arange(6.0)}, group_size=2)
    _assert_same(b, fresh.global_batch(1, 8))
    # without groups: today's rows
    plain = P.PromptSource(caps, 1, encode=_fake_encode)
    for k in (1, 0):
        again = P.PromptSource(caps, 1, encode=_fake_encode, group_size=k)
        assert again.prompts(5, 8) == plain.prompts(5, 8) == _prompts_before(caps, 1, 5, 8)
        np.testing.assert_array_equal(again.global_batch(5, 8)["cond"]["prompt_embeds"],
                                      _fake_encode(_prompts_before(caps, 1, 5, 8))["prompt_embeds"])


def test_prompt_source_precomputed_embeddings_and_real_latents_in_pairs():
    caps = P.read_captions(CAPTIONS)
    n = len(caps)
    emb = {"prompt_embeds": np.random.RandomState(0).randn(n, 3, 2).astype(np.float32),
           "text_embeds": np.arange(n, dtype=np.float32)[:, None]}
    real = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    src = P.PromptSource(caps, 0, embeddings=emb, real=real, group_size=2)
    b = src.global_batch(2, 8)
    idx = [caps.index(p) for p in src.prompts(2, 8)]
    _groups_of(np.asarray(idx), 2)
    np.testing.assert_array_equal(b["cond"]["prompt_embeds"], emb["prompt_embeds"][idx])
    np.testing.assert_array_equal(b["real"][:, 0, 0], np.asarray(idx, np.float32))  # the caption's one latent


@pytest.mark.parametrize("first_row", [3, 4])  # a pair split between the two "processes", or not
def test_prompt_source_groups_across_processes(first_row):
    caps = P.read_captions(CAPTIONS)
    full = P.PromptSource(caps, 1, encode=_fake_encode, constants={"time_ids": np.arange(6.0)}, group_size=2)
    calls = []
    mine = P.PromptSource(caps, 1, encode=_counting_encoder(calls), constants={"time_ids": np.arange(6.0)},
                          local_rows=lambda b: np.arange(first_row, b), group_size=2)
    a, b = full.global_batch(4, 8), mine.global_batch(4, 8)
    # one encode of the distinct captions of these rows: of every pair that has a row here (rows 2.. or 4..)
    assert calls == [full.prompts(4, 8)[first_row // 2 * 2::2]]
    for k in a["cond"]:
        np.testing.assert_array_equal(b["cond"][k][first_row:], a["cond"][k][first_row:])
        assert not np.any(b["cond"][k][:first_row])


# ----------------------------------------------------------------------------------------- the tasks' wiring
@pytest.mark.parametrize("name", ["toy2d_tiny", "digits", "sdxl_tiny"])
def test_each_task_hands_the_session_batches_grouped_by_its_config(name):
    """tasks.build passes amd.group_size to the task's data: its training batches come in groups of K = 2."""
    config = load(os.path.join(ROOT, "configs", f"{name}.py"), {"amd.group_size": 2})
    batch = tasks.build(config).data.global_batch(3, config.global_batch)
    for v in batch["cond"].values():
        assert len(_groups_of(v, 2)) == config.global_batch // 2
    first = batch["cond"]["label" if "label" in batch["cond"] else "input_ids"]  # SDXL: token ids (encoded on the mesh)
    assert not np.array_equal(first[0::2], np.broadcast_to(first[:1], first[0::2].shape))  # groups differ


# --------------------------------------------------------------------------------------------- refusal
def test_a_task_without_grouped_data_refuses_groups(monkeypatch):
    built = []
    module = types.ModuleType("ungrouped_task")
    module.build = lambda config, mesh=None: built.append(config.amd.group_size) or "task"
    monkeypatch.setitem(sys.modules, "ungrouped_task", module)
    monkeypatch.setitem(tasks._TASKS, "ungrouped", "ungrouped_task")
    config = tiny_toy2d_config(**{"experiment": "ungrouped", "amd.group_size": 4})
    with pytest.raises(ConfigError, match=r"amd.group_size=4.*'ungrouped'.*--config.amd.group_size=1"):
        validate(config, 1)  # the Session's first step
    assert built == []  # refused before the task built anything
    config.amd.group_size = 1
    validate(config, 1)
    assert tasks.build(config) == "task" and built == [1]
