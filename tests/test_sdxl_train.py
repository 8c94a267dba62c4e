"""SDXL distillation end to end at tiny size, the full-size state by shape, and the prompt pipeline.

- Prompt data (amd_jax/data/prompts.py): a pure function of (seed, step), each caption once per epoch, the
  process's rows only, precomputed embeddings, file formats and clear errors.
- configs/sdxl_tiny.py through the Trainer on 8 simulated devices (data=4 x fsdp=2): AMD iterations with the
  4-step student (backward simulation), CFG, the VAE-decoded reward, TTUR 2 (generator at step 0 only), critic
  every step; finite losses, student and critic changed, params really FSDP-sharded, a checkpoint written.
- configs/sdxl.py's FULL training state by jax.eval_shape (2,567,463,684-param UNet): student + critic fp32 + both
  AdamW states + GAN head + bf16 teacher, and its per-device bytes under FSDP on abstract 8/64/256-device meshes.
"""

from __future__ import annotations

import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType

from amd_jax import tensor_files
from amd_jax.config import load
from tiny import step_metrics
from amd_jax.data import prompts as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
CAPTIONS = os.path.join(FIX, "captions_tiny.txt")


# ------------------------------------------------------------------------------------------- data
def _fake_encode(prompts):
    """A deterministic stand-in for the text encoders: embeddings that identify the prompt."""
    h = np.asarray([sum(map(ord, p)) for p in prompts], np.float32)
    return {"prompt_embeds": np.tile(h[:, None, None], (1, 3, 2)), "text_embeds": h[:, None] * np.ones((1, 2))}


def _source(seed=0, **kw):
    caps = P.read_captions(CAPTIONS)
    return caps, P.PromptSource(caps, seed, encode=_fake_encode, constants={"time_ids": np.arange(6.0)}, **kw)


def test_prompt_batches_are_a_pure_function_of_step_and_cover_each_epoch():
    caps, src = _source(seed=3)
    assert len(caps) == 12 and caps[0] == "a photo of a cat"
    b = src.global_batch(5, 4)
    assert set(b) == {"cond", "real"} and b["cond"]["prompt_embeds"].shape == (4, 3, 2)
    assert b["cond"]["time_ids"].shape == (4, 6)
    again = _source(seed=3)[1].global_batch(5, 4)  # a fresh source (a resumed run) gives the same batch
    for k in b["cond"]:
        np.testing.assert_array_equal(b["cond"][k], again["cond"][k])
    # every caption exactly once per epoch (12 captions = 3 batches of 4), a new order in the next epoch
    epoch0 = [p for s in range(3) for p in src.prompts(s, 4)]
    epoch1 = [p for s in range(3, 6) for p in src.prompts(s, 4)]
    assert sorted(epoch0) == sorted(caps) == sorted(epoch1)
    assert epoch0 != epoch1 and epoch0 != caps
    assert _source(seed=4)[1].prompts(0, 12) != src.prompts(0, 12)  # the seed matters
    # the conditioning rows are those of the batch's captions
    np.testing.assert_array_equal(b["cond"]["prompt_embeds"], _fake_encode(src.prompts(5, 4))["prompt_embeds"])


def test_each_process_reads_only_its_rows():
    _, full = _source(seed=1)
    calls = []

    def encode(prompts):
        calls.append(len(prompts))
        return _fake_encode(prompts)

    caps = P.read_captions(CAPTIONS)
    mine = P.PromptSource(caps, 1, encode=encode, constants={"time_ids": np.arange(6.0)},
                          local_rows=lambda b: np.arange(b // 2, b))  # "process 1 of 2"
    a, b = full.global_batch(2, 8), mine.global_batch(2, 8)
    assert calls == [4]  # only this process's 4 rows were encoded
    for k in a["cond"]:
        assert b["cond"][k].shape == a["cond"][k].shape
        np.testing.assert_array_equal(b["cond"][k][4:], a["cond"][k][4:])
        assert not np.any(b["cond"][k][:4])


def test_precomputed_embeddings_real_latents_and_formats(tmp_path):
    caps = P.read_captions(CAPTIONS)
    n = len(caps)
    emb = {"prompt_embeds": np.random.RandomState(0).randn(n, 3, 2).astype(np.float32),
           "text_embeds": np.arange(n, dtype=np.float32)[:, None]}
    tensor_files.write(str(tmp_path / "emb.npz"), emb)
    loaded = tensor_files.read(str(tmp_path / "emb.npz"))
    real = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    src = P.PromptSource(caps, 0, embeddings=loaded, real=real)
    batch = src.global_batch(1, 4)
    idx = [caps.index(p) for p in src.prompts(1, 4)]
    np.testing.assert_array_equal(batch["cond"]["prompt_embeds"], emb["prompt_embeds"][idx])
    np.testing.assert_array_equal(batch["real"][:, 0, 0], np.asarray(idx, np.float32))
    with pytest.raises(ValueError, match="rows"):
        P.PromptSource(caps[:5], 0, embeddings=loaded)
    # JSONL with a nested field; empty lines in text files are dropped
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"meta": {"text": c}}) for c in caps[:3]) + "\n\n")
    assert P.read_captions(str(tmp_path / "c.jsonl"), "meta.text") == caps[:3]
    with pytest.raises(KeyError, match="data.field"):
        P.read_captions(str(tmp_path / "c.jsonl"), "caption")
    (tmp_path / "c.txt").write_text("a\n\n b \n")
    assert P.read_captions(f"{tmp_path / 'c.txt'},{tmp_path / 'c.txt'}") == ["a", "b", "a", "b"]
    with pytest.raises(FileNotFoundError):
        P.read_captions(str(tmp_path / "missing.txt"))


def test_parquet_captions(tmp_path):
    pa = pytest.importorskip("pyarrow")  # optional dependency
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"caption": ["x", "y"]}), str(tmp_path / "c.parquet"))
    assert P.read_captions(str(tmp_path / "c.parquet")) == ["x", "y"]


def test_tfds_missing_is_a_clear_error():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tensorflow_datasets"):
            P.tfds_captions("tfds:coco_captions")
    else:
        with pytest.raises(Exception):  # installed, but nothing is prepared here
            P.tfds_captions("tfds:coco_captions_not_prepared_here", "/nonexistent")


# ------------------------------------------------------------------------------------------- tiny run
def test_sdxl_tiny_trains_with_fsdp_via_the_session(tmp_path, caplog):
    from amd_jax.models.common.params import cast_params
    from amd_jax.models.sdxl import weights
    from amd_jax.loop import train
    from amd_jax.session import Session

    assert jax.device_count() == 8
    config = load(os.path.join(ROOT, "configs", "sdxl_tiny.py"),
                  {"total_steps": 3, "checkpoint.every": 3, "checkpoint.async_save": False})
    assert config.mesh.shape == (4, 2) and config.dmd.ttur == 2 and len(config.student.timesteps) == 4
    assert config.method == "amd" and config.reward.name == "hpsv2" and config.dmd.guidance_scale == 8.0
    caplog.set_level(logging.INFO, logger="amd_jax")
    session = Session(config, str(tmp_path / "run"))
    assert session.models.sample_shape == (4, 16, 16)
    state = train(session)

    for r in caplog.records:
        if r.getMessage().startswith("Compiled in"):
            print(r.getMessage())
    m1, m2, m3 = (step_metrics(tmp_path / "run", s) for s in (1, 2, 3))
    print("step 1:", {k: m1[k] for k in ("loss_dm", "loss_critic", "reward_mean", "zone_fraction", "step_time_s")})
    print("step 2:", {k: m2[k] for k in ("loss_critic", "step_time_s")})
    # TTUR 2: steps 0 and 2 ran the generator (AMD: reward, DSA) and the critic; step 1 the critic only.
    # (The student's first update has lr 0, the start of the linear warm-up; its second one moves it.)
    for k in ("loss_dm", "loss_generator", "loss_critic", "reward_mean", "grad_norm_student", "dmd_norm"):
        assert np.isfinite(m1[k]), (k, m1[k])
    assert m1["grad_norm_student"] > 0 and m1["reward_std"] > 0 and m1["alpha_max"] > m1["alpha_min"]
    assert "loss_dm" not in m2 and np.isfinite(m2["loss_critic"]) and m2["grad_norm_critic"] > 0
    assert np.isfinite(m3["loss_dm"]) and np.isfinite(m3["loss_critic"])

    # the student and critic moved away from the (bf16-stored) teacher they started from
    _, teacher = weights.load_unet(os.path.join(FIX, "sdxl_tiny"))
    init = jax.tree_util.tree_map(lambda a: np.asarray(a.astype(jnp.float32)),
                                  cast_params(teacher, jnp.bfloat16))
    for name, tree in (("student", state.student), ("critic", state.critic["denoiser"])):
        diffs = [float(np.max(np.abs(np.asarray(a) - b)))
                 for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(init))]
        assert max(diffs) > 0, name
        assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(tree))

    # FSDP: the big kernels are split over 'fsdp' (2 shards), the optimizer moments follow them
    leaves = jax.tree_util.tree_leaves(state.student)
    sharded = [a for a in leaves if "fsdp" in jax.tree_util.tree_leaves(tuple(a.sharding.spec))]
    assert len(sharded) > len(leaves) // 4, (len(sharded), len(leaves))
    a = max(sharded, key=lambda x: x.size)
    assert math.prod(a.addressable_shards[0].data.shape) * 2 == a.size
    mu = [x for x in jax.tree_util.tree_leaves(state.student_opt) if x.shape == a.shape]
    assert any("fsdp" in jax.tree_util.tree_leaves(tuple(x.sharding.spec)) for x in mu)

    from amd_jax import checkpoint as ckpt_lib

    ck = ckpt_lib.Checkpointer(str(tmp_path / "run"), 3, False)
    assert ck.latest_step() == 3
    ck.close()

    # the offline evaluation job on that checkpoint: 4-step samples, a held-out scorer, every image saved
    from amd_jax.evaluate import Evaluator

    config.eval.scorers.clip_l14 = os.path.join(FIX, "clip", "hf_tiny")
    config.eval.save_images = True
    metrics = Evaluator(config, str(tmp_path / "run")).evaluate(3)
    assert metrics["step"] == 3 and metrics["num_samples"] == 8 and np.isfinite(metrics["clip_l14_mean"])
    assert np.isfinite(metrics["reward_mean"]) and 0 <= metrics["zone_fraction"] <= 1
    out = tmp_path / "run" / "eval"
    assert json.loads((out / "eval_0000003.json").read_text())["clip_l14_mean"] == metrics["clip_l14_mean"]
    assert len(list((out / "images_0000003").glob("*.png"))) == 8
    assert (out / "images_0000003" / "prompts.txt").read_text().splitlines() == P.read_captions(CAPTIONS)[:8]
    assert (out / "results.md").read_text().startswith("| step |")


# ------------------------------------------------------------------------------------------- full size
def test_full_sdxl_state_shapes_and_fsdp_bytes_per_device(tmp_path):
    """configs/sdxl.py's whole training state by shape, and its per-device bytes under the config's sharding."""
    from test_sdxl_models import SDXL_BASE_UNET_CONFIG

    from amd_jax import tasks
    from amd_jax.parallel.sharding import tree_shardings
    from amd_jax.steps import Steps

    (tmp_path / "sdxl" / "unet").mkdir(parents=True)
    (tmp_path / "sdxl" / "unet" / "config.json").write_text(json.dumps(SDXL_BASE_UNET_CONFIG))
    np.save(tmp_path / "real.npy", np.zeros((12, 4, 128, 128), np.float16))
    config = load(os.path.join(ROOT, "configs", "sdxl.py"), {
        "model.path": str(tmp_path / "sdxl"), "data.path": CAPTIONS, "data.real": str(tmp_path / "real.npy"),
        "reward.path": str(tmp_path / "unused")})
    assert config.model.resolution == 1024 and config.global_batch == 128 and config.gan.enabled
    assert config.optim.student_lr == config.optim.critic_lr == 5e-7 and config.dmd.ttur == 5
    models = tasks.build(config).models
    assert models.sample_shape == (4, 128, 128)
    steps = Steps(config, models)
    key = jax.random.PRNGKey(0)
    teacher = jax.eval_shape(models.init_denoiser, key)
    n_unet = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(teacher))
    assert n_unet == 2_567_463_684
    state = jax.eval_shape(steps.init, teacher, key)
    teacher_bf16 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.bfloat16), teacher)
    trees = {"student": state.student, "critic": state.critic, "student_opt": state.student_opt,
             "critic_opt": state.critic_opt, "teacher_bf16": teacher_bf16}
    nbytes = lambda a: math.prod(a.shape) * jnp.dtype(a.dtype).itemsize
    total = {k: sum(nbytes(a) for a in jax.tree_util.tree_leaves(t)) for k, t in trees.items()}
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves((state.student, state.critic)))
    assert total["student"] == 4 * n_unet and total["student_opt"] >= 8 * n_unet
    assert total["critic"] > total["student"]  # + the GAN head
    grand = sum(total.values())
    print(f"\nfull state: {grand / 2**30:.2f} GiB " + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in total.items()))

    fsdp_cfg = config.mesh.shape[1]
    rules, min_size = tuple(config.sharding.rules), config.sharding.fsdp_min_size
    for n_dev in (8, 64, 256):
        for fsdp in sorted({min(fsdp_cfg, n_dev), n_dev}):
            mesh = AbstractMesh((n_dev // fsdp, fsdp), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
            per_dev = sh_total = sh_dev = 0
            for t in trees.values():
                shardings = tree_shardings(t, mesh, rules, min_size)
                for a, s in zip(jax.tree_util.tree_leaves(t), jax.tree_util.tree_leaves(shardings)):
                    b = math.prod(s.shard_shape(a.shape)) * jnp.dtype(a.dtype).itemsize
                    per_dev += b
                    if b < nbytes(a):
                        sh_total, sh_dev = sh_total + nbytes(a), sh_dev + b
            rep = per_dev - sh_dev
            print(f"{n_dev:4d} devices (data={n_dev // fsdp}, fsdp={fsdp}): {per_dev / 2**30:7.3f} GiB per device "
                  f"(sharded leaves {sh_dev / 2**30:.3f} = {sh_total / 2**30:.2f} GiB / {fsdp}, replicated "
                  f"{rep / 2**30:.3f}); total/fsdp = {grand / fsdp / 2**30:.3f} GiB")
            assert sh_dev * fsdp == sh_total  # the sharded leaves are split exactly fsdp ways
            if fsdp == min(fsdp_cfg, n_dev):  # the config's setting: almost everything is sharded
                assert sh_total > 0.98 * grand and per_dev < 1.03 * grand / fsdp


def test_sdxl_tiny_eval_conds_and_evaluate():
    from amd_jax import tasks
    from amd_jax.tasks.sdxl.assets import Assets

    config = load(os.path.join(ROOT, "configs", "sdxl_tiny.py"))
    task = tasks.build(config)
    cond = task.eval_conds(10)  # not a multiple of the tokenizing chunk (global_batch 8)
    # token ids: the session encodes them on the mesh (tests/test_conditioning.py)
    assert cond["input_ids"].shape == cond["input_ids_2"].shape == (10, 77) and cond["input_ids"].dtype == np.int32
    assert cond["reward_tokens"].shape == (10, 16) and cond["time_ids"].shape == (10, 6)
    assert np.array_equal(cond["time_ids"][0], [128, 128, 0, 0, 128, 128])
    # the same prompt is tokenized the same in the eval chunk and in a training batch
    ids = Assets(config).tokenize([P.read_captions(CAPTIONS)[8]])
    assert all(np.array_equal(cond[k][8], ids[k][0]) for k in ("input_ids", "input_ids_2"))
    x = np.random.RandomState(0).randn(10, 4, 16, 16).astype(np.float32)
    rewards, zone = np.linspace(0, 1, 10), np.arange(10) < 3
    metrics, images = task.evaluate(x, cond, rewards, zone)
    assert metrics["num_samples"] == 10 and abs(metrics["reward_mean"] - 0.5) < 1e-9
    assert metrics["zone_fraction"] == pytest.approx(0.3)
    grid = images["samples"]  # 8 images of 32 px (tiny VAE), 8 per row, 1 px frames
    assert grid.shape == (34, 8 * 34, 3) and grid.dtype == np.uint8
    assert tuple(grid[0, 0]) == (255, 0, 0) and tuple(grid[0, 3 * 34]) == (255, 255, 255)
    assert grid[1:33, 1:33].std() > 0


def test_empty_prompt_unconditional_option():
    from amd_jax import tasks
    from amd_jax.models.sdxl.text import SDXLTextEncoders

    config = load(os.path.join(ROOT, "configs", "sdxl_tiny.py"), {"model.uncond": "empty_prompt"})
    models = tasks.build(config).models
    e = dict(zip(("prompt_embeds", "text_embeds"), SDXLTextEncoders.load(config.model.path)([""])))
    cond = {"prompt_embeds": jnp.ones((2, 77, 96)), "text_embeds": jnp.ones((2, 64)), "time_ids": jnp.ones((2, 6))}
    out = jax.jit(models.teacher.null_cond)(cond)  # traced, as inside the steps
    np.testing.assert_allclose(out["prompt_embeds"][1], e["prompt_embeds"][0], atol=1e-6)
    np.testing.assert_allclose(out["text_embeds"][0], e["text_embeds"][0], atol=1e-6)
    assert float(jnp.abs(out["prompt_embeds"]).max()) > 0  # not the zero (DMD2) branch
    zeros = tasks.build(load(os.path.join(ROOT, "configs", "sdxl_tiny.py"))).models.teacher.null_cond(cond)
    assert float(jnp.abs(zeros["prompt_embeds"]).max()) == 0 and np.array_equal(zeros["time_ids"], cond["time_ids"])


def _fid_of_few(a, b) -> float:
    """FID of feature sets [n1, D], [n2, D] with n < D, in closed form without a D x D matrix square root: with the
    centred rows A, B, S1 S2 = A'A B'B / (n1-1)(n2-1) has the nonzero eigenvalues of (A B')(A B')' / ..., so
    Tr sqrtm(S1 S2) = (sum of the singular values of A B') / sqrt((n1-1)(n2-1)). An independent check of
    amd_jax.metrics.fid's scipy sqrtm path (which takes ~30 s at D = 2048 on this CPU; this, a millisecond)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ca, cb = a - a.mean(0), b - b.mean(0)
    n1, n2 = len(a) - 1, len(b) - 1
    trace_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    d = a.mean(0) - b.mean(0)
    return float(d @ d + (ca ** 2).sum() / n1 + (cb ** 2).sum() / n2 - 2 * trace_sqrt)


def test_sdxl_eval_suite_scores_fid_diversity_and_saved_images(tmp_path):
    """The offline SDXL evaluation: every image decoded, scored by two scorers (one the training reward never
    was), FID against reference statistics, per-prompt diversity, images + prompts saved. Each figure is checked
    against the same quantity computed directly, FID by its low-rank closed form (scorers and Inception are checked
    against PyTorch elsewhere)."""
    import importlib.util

    from PIL import Image
    from scipy.spatial.distance import pdist

    from amd_jax import tasks
    from amd_jax.metrics import fid
    from amd_jax.models.inception import network as inception
    from amd_jax.models.inception import weights as inception_weights
    from amd_jax.tasks import sdxl
    from amd_jax.tasks.sdxl.assets import Assets

    spec = importlib.util.spec_from_file_location("mk", os.path.join(FIX, "make_inception_fixture.py"))
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    meta = json.loads(open(os.path.join(FIX, "inception", "keys.json")).read())
    np.savez(tmp_path / "inception.npz", **mk.make_random_state_dict(meta["keys"], meta["seed"]))

    config = load(os.path.join(ROOT, "configs", "sdxl_tiny.py"))
    x = np.random.RandomState(1).randn(8, 4, 16, 16).astype(np.float32)
    config.eval.samples_per_prompt = 2
    images = sdxl.decode_images(Assets(config), x)  # [8, 32, 32, 3] uint8
    features = inception.feature_fn(*inception_weights.load_inception(str(tmp_path / "inception.npz")))
    feats = fid.extract_features(features, images, batch_size=16, mode="clean")  # the suite's batch: one compile
    # the reference set's statistics: those of other (non-negative, as pool3's) features, no second Inception pass
    ref_feats = np.abs(np.random.RandomState(2).randn(8, feats.shape[1])).astype(np.float32)
    fid.save_stats(tmp_path / "ref.npz", *fid.feature_statistics(ref_feats))

    config.eval.scorers.hpsv2 = os.path.join(FIX, "clip", "openclip_tiny")  # = the training reward here
    config.eval.scorers.clip_l14 = os.path.join(FIX, "clip", "hf_tiny")  # held out
    config.eval.inception, config.eval.fid_ref = str(tmp_path / "inception.npz"), str(tmp_path / "ref.npz")
    assets = Assets(config)
    task = tasks.build(config)
    cond = task.eval_conds(8)
    metrics, grid = sdxl.evaluate(config, assets, task.data, x, cond, None, None, save_dir=tmp_path / "imgs")

    prompts = (tmp_path / "imgs" / "prompts.txt").read_text().splitlines()
    caps = P.read_captions(CAPTIONS)
    assert prompts == [caps[0], caps[0], caps[1], caps[1], caps[2], caps[2], caps[3], caps[3]]  # K = 2 in a row
    for i in (0, 7):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "imgs" / f"{i:06d}.png")), images[i])
    suite = assets.eval_suite()
    for name in ("hpsv2", "clip_l14"):
        s = suite.scorers[name]
        direct = np.asarray(s.score(s.params, images.astype(np.float32) / 127.5 - 1.0, s.tokenize(prompts)))
        assert metrics[f"{name}_mean"] == pytest.approx(float(direct.mean()), abs=1e-5)
        assert metrics[f"{name}_std"] == pytest.approx(float(direct.std()), abs=1e-5)
    want = _fid_of_few(feats, ref_feats)
    print(f"fid {metrics['fid']:.6f}, low-rank closed form {want:.6f}")
    assert metrics["fid"] == pytest.approx(want, rel=1e-6) and metrics["fid"] > 0
    per_prompt = [pdist(feats[2 * g:2 * g + 2].astype(np.float64)).mean() for g in range(4)]
    assert metrics["diversity"] == pytest.approx(float(np.mean(per_prompt)), rel=1e-5)
    assert grid["samples"].shape[0] == 34
    config.eval.fid_ref = ""
    with pytest.raises(Exception, match="both"):  # at build time, before any training
        tasks.build(config)


def test_prepare_real_latents_for_the_gan(tmp_path):
    """prepare_sdxl's latents: resize + centre crop, VAE posterior mean per caption, accepted as data.real."""
    import subprocess
    import sys

    from PIL import Image

    from amd_jax import tasks
    from amd_jax.models.vae import autoencoder as sdxl_vae
    from amd_jax.tasks.sdxl import prepare
    from amd_jax.tasks.sdxl.assets import Assets

    caps = P.read_captions(CAPTIONS)
    rng = np.random.RandomState(0)
    paths = []
    for i in range(len(caps)):  # the tiny VAE takes 32 px images (latents 16 x 16)
        size = (32, 32) if i == 0 else (48, 40)
        Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3)).astype(np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(np.full((20, 60, 3), 200, np.uint8)).save(tmp_path / "flat.png")
    flat = prepare.load_image(str(tmp_path / "flat.png"), 32)  # short side 20 -> 32, centre crop
    assert flat.shape == (3, 32, 32) and np.allclose(flat, 200 / 127.5 - 1, atol=1e-5)
    exact = prepare.load_image(paths[0], 32)  # already 32 x 32: no resampling
    np.testing.assert_allclose(exact, np.asarray(Image.open(paths[0]), np.float32).transpose(2, 0, 1) / 127.5 - 1)

    config = load(os.path.join(ROOT, "configs", "sdxl_tiny.py"))
    latents = prepare.encode_real_latents(config, paths, str(tmp_path / "real.npz"), batch_size=4)
    assert latents.shape == (len(caps), 4, 16, 16)
    module, params = Assets(config).vae()
    direct = np.asarray(sdxl_vae.encode(module, params, jnp.asarray(exact[None])))[0]
    np.testing.assert_allclose(latents[0], direct, atol=1e-5)  # batching and padding change nothing

    config.gan.enabled, config.data.real = True, str(tmp_path / "real.npz")
    src = tasks.build(config).data
    batch = src.global_batch(0, 4)
    rows = [caps.index(p) for p in src.prompts(0, 4)]
    np.testing.assert_array_equal(batch["real"], latents[rows])  # each caption gets its own image's latents

    (tmp_path / "short.txt").write_text("\n".join(paths[:3]))  # fewer images than captions: refused, nothing written
    cmd = [sys.executable, "-m", "amd_jax.tools.prepare_sdxl", f"--config={os.path.join(ROOT, 'configs', 'sdxl_tiny.py')}",
           f"--images={tmp_path / 'short.txt'}", f"--latents={tmp_path / 'out.npz'}"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert res.returncode != 0 and "lists 3 images but data.path has 12 captions" in res.stderr
    assert not (tmp_path / "out.npz").exists()
