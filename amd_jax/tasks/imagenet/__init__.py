"""ImageNet 256, class-conditional, in SD-VAE latent space: DMD2 / AMD distillation of a SiT teacher (the paper's
second setting; configs/sit_xl2.py, tiny twin configs/sit_tiny.py).

Networks: student, critic (fake teacher) and frozen real teacher are the SiT transformer (amd_jax/models/sit/network.py) as
a `Denoiser` predicting the rectified-flow velocity; the adapter there maps SiT's time and sign conventions. The
architecture is `model.arch` (hidden_size, depth, num_heads, patch_size, ...): the abstract state needs no file.
The teacher's weights come from `model.path` (a folder written by `python -m amd_jax.tools.convert_sit`, local or
gs://), checked against `model.arch`.

Batches: class labels, uniform over the classes, each on `amd.group_size` rows; with the GAN, real latents of each
row's class from `data.real` (amd_jax/data/latents.py). Latents are NHWC [B, H/8, W/8, 4], scaled by the VAE's
scaling factor (0.18215 for sd-vae-ft-ema) as SiT trains on them.

Reward (`reward.name`, e.g. 'imagenet_vit'): decode the latents with the frozen VAE (`model.vae_path`, a diffusers
AutoencoderKL folder) and take log p(label | image) of a frozen ImageNet classifier. Held-out evaluation
(amd_jax/metrics/imagenet.py): FID, Inception Score, precision and recall against ADM's reference batch
(`eval.reference`, the .npz the user provides) with the converted pytorch-fid Inception (`eval.inception`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from amd_jax import batching
from amd_jax.data.latents import LatentLabels, read_real
from amd_jax.errors import ConfigError
from amd_jax.metrics import grid
from amd_jax.models.sit import denoiser as sit_denoiser
from amd_jax.models.sit import network as sit
from amd_jax.models.sit import weights as sit_weights
from amd_jax.models.common.bundle import Models
from amd_jax.models.common.denoiser import Denoiser
from amd_jax.models.common.dtypes import dtype
from amd_jax.models.vae import autoencoder as vae_lib
from amd_jax.models.vae import weights as vae_weights
from amd_jax.models.common.params import cast_params
from amd_jax.tasks.toy2d.models import GANHead
from amd_jax.method.schedules import make_schedule
from amd_jax.tasks import Task
from amd_jax.tasks.common import class_labels
from amd_jax.tasks.imagenet import arch as imagenet_arch
from amd_jax.tasks.imagenet.checks import check_knobs

GROUPED_DATA = True  # the labels are drawn per group of amd.group_size rows
ABSTRACT = True  # build(config, abstract=True) reads no weight or data file: the TPU plan (amd_jax/plan)

_DTYPES = ("float32", "bfloat16")  # the SiT adapter's compute and teacher dtypes


def build(config, mesh=None, abstract: bool = False) -> Task:
    """`abstract` (the TPU plan): the networks and the abstract_* hooks from model.arch and the reward's published
    architecture (arch.py; the folders' config files when set), no weight or latent file read, no data."""
    del mesh  # every process computes the whole global batch of labels (cheap)
    arch = sit_config(config)
    files = _Files(config, abstract)
    shape = (arch.input_size, arch.input_size, arch.in_channels)
    if abstract:
        return _abstract_task(config, files, _models(config, arch, files))
    real = read_real(config.data.real, shape, arch.num_classes) if config.gan.enabled else (None, None)
    data = LatentLabels(arch.num_classes, shape, seed=config.seed if config.data.seed < 0 else config.data.seed,
                        real=real[0], real_labels=real[1])
    models = _models(config, arch, files)
    eval_conds = functools.partial(class_labels, num_classes=arch.num_classes)
    return Task(models=models, data=data.grouped(config.amd.group_size), teacher=files.teacher,
                reward=files.reward_params, eval_conds=eval_conds,
                evaluate=functools.partial(evaluate, config, files))


def _abstract_task(config, files: "_Files", models: Models) -> Task:
    """A Task whose abstract_frozen / abstract_batch describe what the loaders and the data would give, by shape;
    its data, teacher, reward, eval_conds and evaluate are unusable (None)."""
    scorer = files.classifier() if models.reward is not None else None
    frozen = functools.partial(imagenet_arch.abstract_frozen, models.init_denoiser,
                               dtype(config.model.teacher_dtype), files.vae_module() if scorer else None, scorer)
    batch = functools.partial(imagenet_arch.abstract_batch, models.sample_shape, bool(config.gan.enabled))
    return Task(models=models, data=None, teacher=None, reward=None, eval_conds=None, evaluate=None,
                abstract_frozen=frozen, abstract_batch=batch)


def sit_config(config) -> "sit.SiTConfig":
    m = config.model
    return sit.SiTConfig(**m.arch.to_dict(), dtype=m.compute_dtype, attention_impl=m.attention_impl or None)


def check(config, abstract: bool = False) -> None:
    """SiT/ImageNet's config checks (amd_jax.tasks.check runs them before anything is built); `abstract` (the
    plan): only those that need no file."""
    m = config.model
    check_knobs(config, abstract)  # every knob by type and range, and the input paths (tasks/imagenet/checks.py)
    if m.compute_dtype not in _DTYPES or m.teacher_dtype not in _DTYPES:
        raise ConfigError(f"model.compute_dtype={m.compute_dtype!r}, model.teacher_dtype={m.teacher_dtype!r}: use "
                          f"one of {sorted(_DTYPES)}.")
    if config.schedule.name != "rectified_flow":
        raise ConfigError(f"schedule.name={config.schedule.name!r}: the SiT adapter speaks the rectified-flow "
                          "velocity (SiT's linear interpolant, time reversed); set --config.schedule.name=rectified_flow.")
    if abstract:
        if (config.method == "amd" or config.reward.monitor) and not config.reward.name:
            raise ConfigError("method=amd (or reward.monitor) needs reward.name (e.g. 'imagenet_vit').")
        return  # no file is read
    if (config.method == "amd" or config.reward.monitor) and not (config.reward.name and config.reward.path):
        raise ConfigError("method=amd (or reward.monitor) needs reward.name (e.g. 'imagenet_vit') and reward.path "
                          "(its weight folder), and model.vae_path to decode the latents it scores.")
    if (config.reward.name or config.eval.reference) and not m.vae_path:
        raise ConfigError("model.vae_path is empty: the reward and the evaluation decode latents with the SD-VAE "
                          "(a diffusers AutoencoderKL folder, e.g. stabilityai/sd-vae-ft-ema, local or gs://).")
    if config.gan.enabled and not config.data.real:
        raise ConfigError("gan.enabled needs data.real: real latents + labels (.npz / .safetensors), or set "
                          "--config.gan.enabled=False.")
    if bool(config.eval.reference) != bool(config.eval.inception):
        raise ConfigError("eval.reference (ADM's reference batch .npz) and eval.inception (converted pytorch-fid "
                          "Inception weights) go together: set both or neither.")


class _Files:
    """What the task reads from disk, lazily and once: the teacher, the VAE, the reward classifier, the evaluator.
    `abstract`: only the VAE module and the classifier's architecture (abstract params), from arch.py."""

    def __init__(self, config, abstract: bool = False):
        self.c, self.abstract = config, abstract

    @functools.cache
    def teacher(self):
        arch, params = sit_weights.load_sit(self.c.model.path)
        want = sit_config(self.c)
        diff = {k: (getattr(arch, k), getattr(want, k)) for k in self.c.model.arch if getattr(arch, k) != getattr(want, k)}
        if diff:
            raise ConfigError(f"model.path={self.c.model.path!r} holds a SiT with {diff} (file, config): set "
                              "model.arch to the checkpoint's architecture.")
        return cast_params(params, dtype(self.c.model.teacher_dtype))

    @functools.cache
    def vae(self):
        path = self.c.model.vae_path
        sub = "vae" if (epath.Path(path) / "vae" / "config.json").exists() else ""
        return vae_weights.load_vae(path, param_dtype=np.float32, dtype=jnp.float32, subfolder=sub)

    @functools.cache
    def vae_module(self):
        return imagenet_arch.vae_module(self.c.model.vae_path) if self.abstract else self.vae()[0]

    @functools.cache
    def classifier(self):
        from amd_jax.models.rewards.registry import load_reward

        if self.abstract:
            return imagenet_arch.classifier(self.c.reward.name, self.c.reward.path)
        return load_reward(self.c.reward.name, self.c.reward.path)

    def reward_params(self):
        if not self.c.reward.name:
            return None
        return {"vae": self.vae()[1], "classifier": self.classifier().params}

    @functools.cache
    def evaluator(self):
        from amd_jax.metrics.imagenet import ImageNetEvaluator

        e = self.c.eval
        return ImageNetEvaluator(e.reference, e.inception, batch_size=int(e.batch_size))


def _models(config, arch, files: _Files) -> Models:
    schedule = make_schedule("rectified_flow")
    apply_fn = sit_denoiser.denoiser_apply(arch)
    den = Denoiser(apply_fn, sit_denoiser.null_cond(arch), schedule, "velocity")
    head = GANHead(int(config.gan.hidden))
    reward = None
    if config.reward.name:
        def reward(params, latents, cond):
            images = decode(files.vae_module(), params["vae"], latents)
            return files.classifier().log_prob(params["classifier"], images, cond["label"])

    return Models(student=den, critic=den, teacher=den, init_denoiser=functools.partial(sit.init_params, arch),
                  gan_head=lambda p, feats: head.apply({"params": p}, sit_denoiser.pool_features(feats)),
                  init_gan_head=lambda rng: head.init(rng, jnp.zeros((1, arch.hidden_size), jnp.float32))["params"],
                  reward=reward, sample_shape=(arch.input_size, arch.input_size, arch.in_channels))


def decode(module, params, latents):
    """NHWC latents -> NHWC images in [-1, 1] with the frozen VAE (which works in NCHW)."""
    images = vae_lib.decode(module, params, jnp.transpose(latents, (0, 3, 1, 2)))
    return jnp.transpose(images, (0, 2, 3, 1))


@functools.lru_cache(maxsize=4)
def _decode_fn(module):
    return jax.jit(functools.partial(decode, module))


def evaluate(config, files: _Files, x, cond, rewards, zone, title="", save_dir=None):
    """Reward statistics, ADM's metrics (when eval.reference is set) on every decoded sample, and a grid of the
    first eval.grid_size samples (framed: flagged in the Forbidden Zone)."""
    del title
    metrics = {"num_samples": int(len(x))}
    if rewards is not None:
        r = np.asarray(rewards, np.float64)
        metrics.update(reward_mean=float(r.mean()), reward_std=float(r.std()))
    if zone is not None:
        metrics["zone_fraction"] = float(np.mean(zone))
    full = bool(config.eval.reference)
    g = min(len(x), int(config.eval.grid_size))
    if not config.model.vae_path:  # nothing to decode with: latent statistics only
        metrics.update(latent_mean=float(np.mean(x)), latent_std=float(np.std(x)))
        return metrics, {}
    module, params = files.vae()
    n = len(x) if full else g
    img = batching.map_fixed_batches(functools.partial(_decode_fn(module), params), np.asarray(x[:n], np.float32),
                                     int(config.eval.batch_size))
    images = np.round((img + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    if full:
        metrics.update(files.evaluator().metrics(images))
    if save_dir is not None:
        from amd_jax.metrics.t2i import save_images

        save_images(save_dir, images, [f"class {int(c)}" for c in np.asarray(cond["label"])[:n]])
    framed = None if zone is None else zone[:g]
    return metrics, {"samples": grid.image_grid(images[:g], int(config.eval.grid_cols), framed=framed)}
