"""SDXL: DMD2 / AMD distillation of an SDXL UNet (configs/sdxl.py; tiny twin configs/sdxl_tiny.py).

Networks: student, critic (fake teacher) and frozen real teacher are the SDXL UNet as a `Denoiser` (eps on
DiscreteDDPM, amd_jax/models/sdxl/unet.py). `init_denoiser(rng)` is the UNet architecture's init (traced only, for
the abstract state); the task's `teacher()` loads the real weights from `model.path` (diffusers folder, local or
gs://) in `model.teacher_dtype` (bf16 for SDXL); steps.py's `init` copies them to the float32 student and critic.

Conditioning: outside the differentiated steps, once per batch. The data pipeline (amd_jax/data/prompts.py) tokenizes
the captions on the host; the batch carries input_ids and input_ids_2 [B,77] int32 (both tokenizers), and the task's
`condition` (Assets.condition) runs both text encoders ON THE MESH, where the batch lives: the session places their
parameters once and applies it to every training batch and the evaluation conditions (amd_jax/conditioning.py).
With precomputed embeddings (`data.embeddings`) the batch holds them already and there is no `condition`. Either way
the steps read
    cond = {prompt_embeds [B,77,2048], text_embeds [B,1280], time_ids [B,6], reward_tokens [B,L] int32}
(reward_tokens stay host-tokenized: the reward's tokenizer is cheap and its ids are what the reward reads).
Unconditional branch: zero text and pooled embeddings (DMD2; `model.uncond='zeros'`) or the empty prompt's
embeddings (`model.uncond='empty_prompt'`); micro-conditioning is kept.

Reward: `reward(params, latents, cond)` decodes the latents with the frozen VAE and scores the images against
`reward_tokens` with `reward.name` (hpsv2, pickscore, ...); params = {'vae': ..., 'scorer': ...}.
GAN (gan.enabled): DMD2's head (amd_jax/models/common/gan_head.py) on the critic UNet's mid-block features; its
'real' samples are per-caption latents from `data.real` (`python -m amd_jax.tools.prepare_sdxl`).
Files are loaded lazily, once, by `Assets` (tasks/sdxl/assets.py); offline preparation is in tasks/sdxl/prepare.py.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from amd_jax import batching, tensor_files
from amd_jax.conditioning import Condition
from amd_jax.data import prompts as P
from amd_jax.data import records
from amd_jax.errors import ConfigError
from amd_jax.metrics import grid
from amd_jax.models.common.attention import KERNELS, AttentionCore
from amd_jax.models.common.bundle import Models
from amd_jax.models.sdxl import unet as sdxl_unet
from amd_jax.models.sdxl import unet_flax
from amd_jax.models.vae import autoencoder as sdxl_vae
from amd_jax.models.sdxl import weights as W
from amd_jax.models.common.gan_head import GanHead
from amd_jax.parallel import mesh as mesh_lib
from amd_jax.tasks import Task
from amd_jax.tasks.sdxl import arch
from amd_jax.tasks.sdxl.assets import Assets, dtype, time_ids
from amd_jax.tasks.sdxl.checks import check_knobs

log = logging.getLogger("amd_jax")

GROUPED_DATA = True  # the data put each condition on amd.group_size consecutive rows
ABSTRACT = True  # build(config, abstract=True) reads no file: the TPU plan (amd_jax/plan)
# keys a checkpoint may be resumed with other values of (amd_jax.tasks.resume_free_keys; amd_jax/config/resume.py)
RESUME_FREE = (
    "model.unet_remat",  # what the backward pass recomputes, not what it computes
    "model.unet_attention",  # the attention kernel (XLA or Pallas flash): the same function, another program
)


def build(config, mesh=None, abstract: bool = False) -> Task:
    """`mesh`: the session's; the prompt source encodes only the rows of each global batch that this process's
    devices hold on it (all rows without one). `abstract` (the TPU plan): the networks and the abstract_* hooks
    from the architecture alone (arch.py); no weight, caption or latent file is read, no data source."""
    assets = Assets(config, abstract)
    assets.eval_suite()  # checks eval.* now (loads nothing), not after training
    models = _models(config, assets, mesh)
    if abstract:
        return _abstract_task(config, assets, models)
    source = _source(config, assets, mesh, models.sample_shape)

    def reward():
        if models.reward is None:
            return None
        return {"vae": assets.vae()[1], "scorer": assets.scorer().params}

    on_mesh = not source.precomputed  # else the batches hold precomputed embeddings
    condition = Condition(params=assets.text_params, apply=assets.condition) if on_mesh else None
    return Task(
        models=models, data=source, teacher=assets.teacher, reward=reward,
        eval_conds=functools.partial(eval_conds, config, assets.tokenize if on_mesh else assets.encode, source),
        evaluate=functools.partial(evaluate, config, assets, source), condition=condition,
    )


def _abstract_task(config, assets: Assets, models: Models) -> Task:
    """A Task whose abstract_frozen / abstract_batch describe what the loaders and the data would give, by shape;
    its data, teacher, reward, eval_conds and evaluate are unusable (None)."""
    scorer = assets.scorer() if models.reward is not None else None
    frozen = functools.partial(arch.abstract_frozen, models.init_denoiser, dtype(config.model.teacher_dtype),
                               assets.vae_module() if scorer else None, scorer)
    tokens = scorer.config.text_config.max_position_embeddings if scorer else None
    batch = functools.partial(arch.abstract_batch, assets.unet_config(), models.sample_shape,
                              dtype(config.model.text_dtype), tokens, bool(config.gan.enabled or config.data.real))
    return Task(models=models, data=None, teacher=None, reward=None, eval_conds=None, evaluate=None,
                abstract_frozen=frozen, abstract_batch=batch)


def check(config, abstract: bool = False) -> None:
    """SDXL's config checks (amd_jax.tasks.check runs them before anything is built); `abstract` (the plan): only
    those that need no file."""
    m = config.model
    check_knobs(config, abstract)  # every knob by type and range, and the input paths (amd_jax/tasks/sdxl/checks.py)
    _check_unet_impl(m)
    if m.uncond not in ("zeros", "empty_prompt"):
        raise ConfigError(f"model.uncond={m.uncond!r}: use 'zeros' (DMD2) or 'empty_prompt'.")
    if (config.method == "amd" or config.reward.monitor) and not config.reward.name:
        raise ConfigError("method=amd (or reward.monitor) needs reward.name (e.g. 'hpsv2') and reward.path.")
    if abstract:
        return  # no data is read
    if m.unet_attention == "flash" and jax.default_backend() != "tpu":
        raise ConfigError(f"model.unet_attention='flash' is a Pallas TPU kernel; this host's backend is "
                          f"{jax.default_backend()!r}: use --config.model.unet_attention=xla here.")
    if records.gan_without_real(config):
        raise ConfigError("gan.enabled needs data.real: per-caption real latents [N, 4, H/8, W/8] (.npy/.npz/"
                          ".safetensors), or caption records holding them as data.path; or set "
                          "--config.gan.enabled=False.")


def unet_module(config, ucfg: dict, mesh=None):
    """The UNet module of `model.unet_impl`: diffusers' Flax UNet, or ours (unet_flax) with `model.unet_scan`,
    `model.unet_remat` and `model.unet_attention` (the exact GELU then comes from the module: unet_apply's
    interceptor targets diffusers'). `mesh`: the session's, over whose batch axes the flash kernel runs."""
    m = config.model
    if m.unet_impl == "diffusers":
        return W.unet_from_config(ucfg, dtype(m.compute_dtype))
    W.check_unet_config(ucfg)
    core = AttentionCore(m.unet_attention, mesh, _batch_axes(config, mesh))
    return unet_flax.from_config(ucfg, dtype(m.compute_dtype), scan_layers=bool(m.unet_scan), remat=m.unet_remat,
                                 exact_gelu=bool(m.exact_gelu), attention_core=core)


def _check_unet_impl(m) -> None:
    """model.unet_impl / unet_scan / unet_remat: known values, and scan/remat only on the owned UNet."""
    if m.unet_impl not in ("diffusers", "owned"):
        raise ConfigError(f"model.unet_impl={m.unet_impl!r}: use 'diffusers' or 'owned' (amd_jax/models/sdxl/"
                          "unet_flax.py).")
    if m.unet_remat not in unet_flax.REMAT_POLICIES:
        raise ConfigError(f"model.unet_remat={m.unet_remat!r}: use one of {unet_flax.REMAT_POLICIES}.")
    if m.unet_attention not in KERNELS:
        raise ConfigError(f"model.unet_attention={m.unet_attention!r}: use one of {KERNELS}.")
    if m.unet_impl == "diffusers" and (m.unet_scan or m.unet_remat != "none" or m.unet_attention != "xla"):
        raise ConfigError(f"model.unet_scan={m.unet_scan} / model.unet_remat={m.unet_remat!r} / "
                          f"model.unet_attention={m.unet_attention!r} need model.unet_impl='owned' (diffusers' UNet "
                          "cannot scan or remat its blocks or change its attention kernel).")


def _models(config, assets: Assets, mesh=None) -> Models:
    """The UNet denoisers, GAN head and reward function (no weights)."""
    ucfg = assets.unet_config()
    module = unet_module(config, ucfg, mesh)
    den = sdxl_unet.make_denoiser(module, exact_gelu=bool(config.model.exact_gelu))
    if config.model.uncond == "empty_prompt":
        import dataclasses

        e = assets.empty_prompt()  # eagerly: a jitted encoder called under the step's trace would be staged

        def null_cond(cond):
            b = cond["prompt_embeds"].shape[0]
            return {"prompt_embeds": jnp.broadcast_to(jnp.asarray(e["prompt_embeds"]), cond["prompt_embeds"].shape),
                    "text_embeds": jnp.broadcast_to(jnp.asarray(e["text_embeds"]), (b,) + e["text_embeds"].shape),
                    "time_ids": cond["time_ids"]}

        den = dataclasses.replace(den, null_cond=null_cond)

    lat = int(config.model.resolution) // 8
    sample_shape = (int(ucfg.get("in_channels", 4)), lat, lat)
    n_blocks = len(ucfg["block_out_channels"])
    mid_hw = lat // 2 ** (n_blocks - 1)
    mid_c = int(ucfg["block_out_channels"][-1])

    head = GanHead(hidden=int(config.gan.hidden))
    gan_head = init_gan_head = None
    if config.gan.enabled:
        gan_head = lambda params, feats: head.apply({"params": params}, feats)
        init_gan_head = lambda rng: head.init(rng, jnp.zeros((1, mid_hw, mid_hw, mid_c), jnp.float32))["params"]

    use_reward = bool(config.reward.name)
    reward = None
    if use_reward:
        def reward(params, latents, cond):
            images = sdxl_vae.decode(assets.vae_module(), params["vae"], latents)  # NCHW [-1, 1]
            images = jnp.transpose(images, (0, 2, 3, 1))
            return assets.scorer().score(params["scorer"], images, cond["reward_tokens"])

    return Models(student=den, critic=den, teacher=den, init_denoiser=module.init_weights, gan_head=gan_head,
                  init_gan_head=init_gan_head, reward=reward, sample_shape=sample_shape)


# caption records' embeddings (amd_jax/data/records.py open_for_task): both, any shape, or none
RECORDS_EMBEDDINGS = {"prompt_embeds": None, "text_embeds": None}


def _source(config, assets: Assets, mesh, sample_shape) -> P.PromptSource:
    """The prompt source of the training batches (captions, optional precomputed embeddings and real latents;
    or caption records holding all three, read per process by index with the next steps prefetched)."""
    use_reward = bool(config.reward.name)
    d = config.data
    embeddings = real = prefetch = None
    if d.path.startswith("tfds:"):
        captions = P.tfds_captions(d.path, d.tfds_dir or None, d.field or "captions.text")
    elif records.is_records(d.path):
        captions = records.open_for_task(config, "SDXL", RECORDS_EMBEDDINGS, sample_shape)
        prefetch = records.PREFETCH
    else:
        captions = P.read_captions(d.path, d.field)
    if d.embeddings:
        raw = tensor_files.read(d.embeddings)
        embeddings = {"prompt_embeds": raw["prompt_embeds"],
                      "text_embeds": raw["text_embeds"] if "text_embeds" in raw else raw["pooled"]}
    if d.real:
        raw = tensor_files.read(d.real)
        real = raw.get("latents", raw.get(tensor_files.NPY_KEY, next(iter(raw.values()))))
        if tuple(real.shape[1:]) != sample_shape:
            raise ConfigError(f"data.real latents have shape {real.shape[1:]}, expected {sample_shape}.")
    tokenize = {"reward_tokens": lambda p: assets.scorer().tokenize(p)} if use_reward else {}
    precomputed = embeddings is not None or bool(isinstance(captions, records.Records) and captions.embedding_names)
    source = P.PromptSource(captions, seed=config.seed if d.seed < 0 else d.seed,
                            encode=None if precomputed else assets.tokenize, embeddings=embeddings,
                            tokenize=tokenize, constants={"time_ids": time_ids(config)}, real=real,
                            real_shape=sample_shape if real is None and config.gan.enabled else (1,),
                            local_rows=functools.partial(mesh_lib.process_rows, mesh, axes=_batch_axes(config, mesh)),
                            group_size=config.amd.group_size, prefetch=prefetch,
                            records_real=bool(config.gan.enabled))
    return source


def eval_conds(config, encode, source, n: int) -> dict:
    """The host cond of n evaluation samples: `encode` is Assets.tokenize (the session encodes them on the mesh,
    as the training batches) or, for a run on precomputed embeddings, Assets.encode."""
    cond = P.eval_conds(config, encode, source, n)
    cond["time_ids"] = np.broadcast_to(time_ids(config), (n, 6)).copy()
    return cond


@functools.lru_cache(maxsize=4)
def _decode_fn(module):
    return jax.jit(functools.partial(sdxl_vae.decode, module))


def decode_images(assets: Assets, x, chunk: int = 8) -> np.ndarray:
    """Latents [N,4,h,w] -> uint8 images [N, H, W, 3] with the frozen VAE (host side, chunks of `chunk`)."""
    module, params = assets.vae()
    img = batching.map_fixed_batches(functools.partial(_decode_fn(module), params), np.asarray(x, np.float32), chunk)
    img = img.transpose(0, 2, 3, 1)
    return np.round((img + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def evaluate(config, assets: Assets, source, x, cond, rewards, zone, title="", save_dir=None):
    """The training reward's statistics, the eval suite's metrics (amd_jax/metrics/t2i.py: FID, scorers, diversity)
    on every decoded image, and a grid of the first eval.grid_size; save_dir: also every image as a PNG."""
    suite = assets.eval_suite()
    full = bool(suite.scorer_paths or suite.inception_path or save_dir)
    n = len(x) if full else min(len(x), int(config.eval.grid_size))
    metrics = {"num_samples": int(len(x))}
    if rewards is not None:
        r = np.asarray(rewards, np.float64)
        metrics.update(reward_mean=float(r.mean()), reward_std=float(r.std()), reward_name=config.reward.name)
    if zone is not None:
        metrics["zone_fraction"] = float(np.mean(zone))
    images = decode_images(assets, np.asarray(x)[:n])
    if full:
        prompts, groups = P.eval_prompts(config, source, len(x))
        metrics.update(suite.metrics(images, prompts, groups))
        if save_dir is not None:
            from amd_jax.metrics.t2i import save_images

            save_images(save_dir, images, prompts)
    g = min(len(x), int(config.eval.grid_size))
    framed = None if zone is None else zone[:g]
    return metrics, {"samples": grid.image_grid(images[:g], int(config.eval.grid_cols), framed=framed)}


def _batch_axes(config, mesh) -> tuple[str, ...]:
    """The axes of the session's mesh the batch is split over (config mesh.batch_axes); () without a mesh."""
    return mesh_lib.batch_axes(mesh, config.mesh.batch_axes) if mesh is not None else ()


def memory_knobs(config) -> list[str]:
    """The plan's advice when a step does not fit (amd_jax.tasks.memory_knobs): the UNet's activation checkpointing."""
    m = config.model
    return ["for SDXL, activation checkpointing: --config.model.unet_impl=owned --config.model.unet_scan=True "
            f"--config.model.unet_remat=block (now {m.get('unet_impl', '-')}, scan {m.get('unet_scan', '-')}, "
            f"remat {m.get('unet_remat', '-')})"]
