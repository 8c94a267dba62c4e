"""wan: DMD2 / AMD distillation of Wan2.1 text-to-video (configs/wan21_t2v.py; tiny twin configs/wan_tiny.py).

Networks (models.py): student, critic (fake score) and frozen teacher are the Wan transformer as a Denoiser
(models/wan/denoiser.py): rectified flow with Wan's timestep shift (schedule shifted_rectified_flow, kwargs.shift),
velocity prediction, the teacher's CFG against the negative prompt's umT5 embeddings (model.negative_prompt; ''
as diffusers' WanPipeline) at dmd.guidance_scale (Wan's default 5.0). Samples are channels-last latents
[F, H/8, W/8, 16] with F = (model.frames - 1) / 4 + 1. The student starts as the teacher (steps.py's init copies
the teacher's weights, as for SDXL); its step count is student.timesteps (FastVideo uses 3).
Sequence parallelism: with a 'context' mesh axis of size > 1 (mesh.axes=('data', 'fsdp', 'context'), batch axes
without it) the transformers split their tokens over it (parallel/context.py, model.sequence_method).

Conditioning: the batch carries umT5 token ids + attention mask [B, model.text_len] and the session encodes them
ON THE MESH (amd_jax/conditioning.py, Assets.condition), or the batch holds precomputed embeddings (data.embeddings:
'text' [N, L, D]); the steps read cond = {text [B, L, D], reward_tokens [B, L'] (with a reward)}. Per-prompt groups
(amd.group_size) come from data/prompts.py as for SDXL. Caption records as data.path (amd_jax/data/records.py,
written by `python -m amd_jax.tools.convert_inputs`) carry the captions, 'text' [L, D] and the real latents, read per
process by index with prefetch and checked when opened as SDXL's are (records.open_for_task).
Reward (optional: reward.name='' with method=dmd2): the frozen VAE decodes the video, an image-text scorer scores
reward.frames evenly spaced frames against the caption, averaged, plus reward.temporal_weight x temporal smoothness
(models/rewards/video.py; docs/METHOD.md "Video rewards"). GAN (gan.enabled): DMD2's MLP head on the critic's
mean-pooled last-block tokens; its real samples are per-caption latents from data.real [N, F, h, w, C].
Checks (checks.py), one line each before anything loads: the model folder's configs, frames 4k + 1, sides multiples
of 16, the context axis against the tokens and heads.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from amd_jax import batching, tensor_files
from amd_jax.conditioning import Condition
from amd_jax.config.checks import need
from amd_jax.data import prompts as P
from amd_jax.data import records
from amd_jax.errors import ConfigError
from amd_jax.metrics import grid
from amd_jax.models.rewards.video import frame_indices, temporal_smoothness
from amd_jax.models.wan import vae as wan_vae
from amd_jax.parallel import mesh as mesh_lib
from amd_jax.tasks import Task
from amd_jax.tasks.wan import checks
from amd_jax.tasks.wan.assets import Assets
from amd_jax.tasks.wan.models import batch_axes, build_models

log = logging.getLogger("amd_jax")

GROUPED_DATA = True  # the prompt source puts each caption on amd.group_size consecutive rows
ABSTRACT = True  # build(config, abstract=True) reads no file: the TPU plan
RESUME_FREE = ("model.remat", "model.attention", "model.sequence_method")  # how, not what, is computed


def check(config, abstract: bool = False) -> None:
    """Wan's checks (amd_jax.tasks.check runs them before anything is built); `abstract`: only those that need no
    file."""
    checks.check_knobs(config, abstract)
    if (config.method == "amd" or config.reward.monitor) and not config.reward.name:
        raise ConfigError("method=amd (or reward.monitor) needs reward.name (e.g. 'hpsv2') and reward.path; or use "
                          "--config.method=dmd2 --config.reward.monitor=False.")
    if config.schedule.name != "shifted_rectified_flow":
        raise ConfigError(f"schedule.name={config.schedule.name!r}: Wan2.1 is a flow-matching model with a timestep "
                          "shift; use 'shifted_rectified_flow' (schedule.kwargs.shift, 3.0 at 480P).")
    if abstract:  # the plan's mesh is another machine's: the transformer checks the context axis when traced
        checks.latent_shape(config, Assets(config, abstract=True).transformer_config().in_channels)
        return
    if config.model.attention == "flash" and jax.default_backend() != "tpu":
        raise ConfigError(f"model.attention='flash' is a Pallas TPU kernel; this host's backend is "
                          f"{jax.default_backend()!r}: use --config.model.attention=xla here.")
    checks.check_model_folder(config, need_text=True)
    need(not records.gan_without_real(config),
         "gan.enabled needs data.real: per-caption real latents [N, F, H/8, W/8, 16] (.npy/.npz/.safetensors), or "
         "caption records holding them as data.path; or set --config.gan.enabled=False.")
    cfg = Assets(config).transformer_config()
    shape = checks.latent_shape(config, cfg.in_channels)
    checks.check_context(config, checks.tokens_of(shape, cfg.patch_size), cfg.num_attention_heads)


def build(config, mesh=None, abstract: bool = False) -> Task:
    """`mesh`: the session's (the context axis, the process's rows); `abstract`: the plan's task (no file read)."""
    assets = Assets(config, abstract)
    models = build_models(config, assets, mesh)
    if abstract:
        return Task(models=models, data=None, teacher=None, reward=None, eval_conds=None, evaluate=None,
                    abstract_frozen=functools.partial(_abstract_frozen, config, assets, models),
                    abstract_batch=functools.partial(_abstract_batch, config, assets, models))
    source = _source(config, assets, mesh, models.sample_shape)

    def reward():
        return None if models.reward is None else {"vae": assets.vae()[1], "scorer": assets.scorer().params}

    on_mesh = not source.precomputed
    condition = Condition(params=assets.text_params, apply=assets.condition) if on_mesh else None
    return Task(models=models, data=source, teacher=assets.teacher, reward=reward,
                eval_conds=functools.partial(eval_conds, config, assets.tokenize if on_mesh else assets.encode, source),
                evaluate=functools.partial(evaluate, config, assets, source), condition=condition)


def _source(config, assets: Assets, mesh, sample_shape) -> P.PromptSource:
    """The prompt source of the training batches: captions with optional data.embeddings and data.real, or caption
    records holding all three (amd_jax/data/records.py), read per process by index with the next steps prefetched."""
    d = config.data
    embeddings = real = prefetch = None
    if records.is_records(d.path):
        text_shape = (int(config.model.text_len), assets.transformer_config().text_dim)
        captions = records.open_for_task(config, "Wan", {"text": text_shape}, sample_shape)
        prefetch = records.PREFETCH
    else:
        captions = P.read_captions(d.path, d.field)
    if d.embeddings:
        raw = tensor_files.read(d.embeddings)
        if "text" not in raw:
            raise ConfigError(f"data.embeddings={d.embeddings!r} holds {sorted(raw)}; Wan needs 'text' [N, L, D] (the "
                              "umT5 prompt embeddings, padding zeroed).")
        embeddings = {"text": raw["text"]}
    if d.real:
        raw = tensor_files.read(d.real)
        real = raw.get("latents", raw.get(tensor_files.NPY_KEY, next(iter(raw.values()))))
        if tuple(real.shape[1:]) != tuple(sample_shape):
            raise ConfigError(f"data.real latents have shape {tuple(real.shape[1:])}, the model needs "
                              f"{tuple(sample_shape)} ([F, H/8, W/8, C] channels-last).")
    tokenize = {"reward_tokens": lambda p: assets.scorer().tokenize(p)} if config.reward.name else {}
    precomputed = embeddings is not None or bool(isinstance(captions, records.Records) and captions.embedding_names)
    return P.PromptSource(captions, seed=config.seed if d.seed < 0 else d.seed,
                          encode=None if precomputed else assets.tokenize, embeddings=embeddings,
                          tokenize=tokenize, real=real, real_shape=tuple(sample_shape) if config.gan.enabled else (1,),
                          local_rows=functools.partial(mesh_lib.process_rows, mesh, axes=batch_axes(config, mesh)),
                          group_size=config.amd.group_size, prefetch=prefetch, records_real=bool(config.gan.enabled))


def eval_conds(config, encode, source, n: int) -> dict:
    """The host cond of n evaluation samples (token ids, encoded on the mesh; or embeddings)."""
    return P.eval_conds(config, encode, source, n)


@functools.lru_cache(maxsize=4)
def _decode_fn(module):
    return jax.jit(functools.partial(wan_vae.decode, module))


def decode_videos(assets: Assets, x, chunk: int = 4) -> np.ndarray:
    """Latents [N, F, h, w, C] -> uint8 videos [N, T, H, W, 3] with the frozen VAE (host side, chunks of `chunk`)."""
    module, params = assets.vae()
    video = batching.map_fixed_batches(functools.partial(_decode_fn(module), params), np.asarray(x, np.float32), chunk)
    return np.round((np.asarray(video) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def frame_strips(videos: np.ndarray, frames: int) -> np.ndarray:
    """[N, T, H, W, 3] -> [N, H, k W, 3]: `frames` evenly spaced frames of each video side by side."""
    idx = frame_indices(videos.shape[1], frames)
    sel = videos[:, idx]  # [N, k, H, W, 3]
    return sel.transpose(0, 2, 1, 3, 4).reshape(sel.shape[0], sel.shape[2], -1, 3)


def save_videos(save_dir, videos: np.ndarray, prompts: list[str], frames: int) -> None:
    """Every video as an animated GIF (16 fps, Wan's frame rate) and its frame strip as a PNG, and prompts.txt (one
    line per video); written atomically by process 0 (amd_jax/writers.py)."""
    import os

    from amd_jax import caches, writers

    strips = frame_strips(videos, frames)
    for i, v in enumerate(videos):
        writers.save_animation(os.path.join(save_dir, f"{i:06d}.gif"), v, fps=16)
        writers.save_png(os.path.join(save_dir, f"{i:06d}_strip.png"), strips[i])
    if jax.process_index() == 0:
        caches.atomic_write_bytes(os.path.join(save_dir, "prompts.txt"), ("\n".join(prompts) + "\n").encode())


def evaluate(config, assets: Assets, source, x, cond, rewards, zone, title="", save_dir=None):
    """The training reward's statistics, the decoded videos' temporal smoothness, and a grid of frame strips (one
    row per video, eval.frames frames each); save_dir: also every video (GIF + strip PNG) and prompts.txt."""
    metrics = {"num_samples": int(len(x))}
    if rewards is not None:
        r = np.asarray(rewards, np.float64)
        metrics.update(reward_mean=float(r.mean()), reward_std=float(r.std()), reward_name=config.reward.name)
    if zone is not None:
        metrics["zone_fraction"] = float(np.mean(zone))
    n = len(x) if save_dir is not None else min(len(x), int(config.eval.grid_size))
    videos = decode_videos(assets, np.asarray(x)[:n])
    smooth = np.asarray(temporal_smoothness(jnp.asarray(videos, jnp.float32) / 127.5 - 1.0))
    metrics["temporal_smoothness"] = float(smooth.mean())
    if save_dir is not None:
        save_videos(save_dir, videos, P.eval_prompts(config, source, len(x))[0], int(config.eval.frames))
    g = min(len(x), int(config.eval.grid_size))
    strips = frame_strips(videos[:g], int(config.eval.frames))
    framed = None if zone is None else zone[:g]
    return metrics, {"samples": grid.image_grid(strips, 1, framed=framed)}


def _abstract_frozen(config, assets: Assets, models) -> dict:
    """{'teacher': params in model.teacher_dtype, 'reward': {'vae', 'scorer'} float32 | None} by shape."""
    from amd_jax.models.common.dtypes import dtype

    td = dtype(config.model.teacher_dtype)
    teacher = jax.eval_shape(models.init_denoiser, jax.random.PRNGKey(0))
    teacher = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, td), teacher)
    if models.reward is None:
        return {"teacher": teacher, "reward": None}
    vae = wan_vae.abstract_params(assets.vae_module().cfg)
    f32 = lambda t: jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.float32), t)
    return {"teacher": teacher, "reward": {"vae": f32(vae), "scorer": f32(assets.scorer().abstract_params())}}


def _abstract_batch(config, assets: Assets, models, bsz: int) -> dict:
    """A global batch of `bsz` rows by shape: {'cond': {text, reward_tokens}, 'real'} (the embeddings as the session
    hands them to the steps)."""
    s = jax.ShapeDtypeStruct
    cfg = assets.transformer_config()
    cond = {"text": s((bsz, int(config.model.text_len), cfg.text_dim), jnp.float32)}
    if models.reward is not None:
        cond["reward_tokens"] = s((bsz, assets.scorer().config.text_config.max_position_embeddings), jnp.int32)
    real = tuple(models.sample_shape) if config.gan.enabled else (1,)
    return {"cond": cond, "real": s((bsz,) + real, jnp.float32)}
