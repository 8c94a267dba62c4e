"""The SDXL experiment: DMD2 / AMD distillation of an SDXL UNet (configs/sdxl.py; tiny twin configs/sdxl_tiny.py).

Networks: student, critic (fake teacher) and frozen real teacher are the SDXL UNet as a `Denoiser` (eps on
DiscreteDDPM, amd_jax/models/sdxl/unet.py). `init_denoiser(rng)` is the UNet architecture's init (the trainer only
traces it with jax.eval_shape for the abstract state); `frozen()` loads the real weights from `model.path`
(diffusers folder, local or gs://) in `model.teacher_dtype` (bf16 for SDXL); steps.py's `init` copies them to the
float32 student and critic (DMD2: both start as the teacher).

Conditioning (design): prompts are encoded OUTSIDE the differentiated steps, in the data pipeline. The prompt
source (amd_jax/data/prompts.py) calls a jitted CLIP-L + bigG encoder on this process's rows of every global batch
(or reads precomputed embeddings, `data.embeddings`), so the batch that reaches the trainer is already
    cond = {prompt_embeds [B,77,2048], text_embeds [B,1280], time_ids [B,6], reward_tokens [B,L] int32}
Unconditional branch: zero text and pooled embeddings (DMD2; `model.uncond='zeros'`) or the empty prompt's
embeddings (`model.uncond='empty_prompt'`); micro-conditioning is kept.

Reward: `reward(params, latents, cond)` decodes the latents with the frozen VAE and scores the images against
`reward_tokens` with `reward.name` from amd_jax.models.rewards (hpsv2, pickscore, ...); params =
{'vae': ..., 'scorer': ...}; the step functions stop its gradient.
GAN (gan.enabled): a small conv head (conv3x3 -> GroupNorm -> SiLU -> conv3x3 to 1 -> mean over H, W) on the
critic UNet's mid-block features. Its 'real' samples are per-caption latents from `data.real` (VAE-encoded
images, `encode_real_latents` / `python -m amd_jax.prepare_sdxl`), required when the GAN is on.
"""

from __future__ import annotations

import functools
import json
import logging
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from amd_jax.data import prompts as P
from amd_jax.models.bundle import Models
from amd_jax.models.sdxl import text as sdxl_text
from amd_jax.models.sdxl import unet as sdxl_unet
from amd_jax.models.sdxl import vae as sdxl_vae
from amd_jax.models.sdxl import weights as W
from amd_jax.errors import ConfigError

log = logging.getLogger("amd_jax")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _dtype(name):
    if name not in _DTYPES:
        raise ConfigError(f"dtype {name!r}: use one of {sorted(_DTYPES)}.")
    return _DTYPES[name]


class GanHead(nn.Module):
    """DMD2-style discriminator head on UNet mid-block features (NHWC) -> one logit per sample."""

    hidden: int = 256
    groups: int = 32

    @nn.compact
    def __call__(self, feats):
        h = nn.Conv(self.hidden, (3, 3), padding="SAME", name="conv_in")(feats.astype(jnp.float32))
        h = nn.GroupNorm(num_groups=math.gcd(self.groups, self.hidden), name="norm")(h)
        h = nn.silu(h)
        h = nn.Conv(1, (3, 3), padding="SAME", name="conv_out")(h)
        return jnp.mean(h, axis=(1, 2, 3))


class Assets:
    """Everything loaded from disk, lazily and once: text encoders, VAE, reward scorer, teacher params."""

    def __init__(self, config):
        self.c = config
        self._cache = {}

    def _once(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def unet_config(self) -> dict:
        return self._once("unet_config", lambda: json.loads(
            (epath.Path(self.c.model.path) / "unet" / "config.json").read_text()))

    def text(self) -> sdxl_text.SDXLTextEncoders:
        def load():
            enc = sdxl_text.SDXLTextEncoders.load(self.c.model.path, param_dtype=np.float32,
                                                  dtype=_dtype(self.c.model.text_dtype),
                                                  variant=self.c.model.variant or None)
            # one copy on this process's first device (not re-sent every call)
            dev = jax.local_devices()[0]
            enc.params, enc.params_2 = jax.device_put((enc.params, enc.params_2), dev)
            return enc

        return self._once("text", load)

    def encode_jit(self):
        return self._once("encode_jit", lambda: jax.jit(self.text().encode_ids))

    def encode(self, prompts: list[str]) -> dict[str, np.ndarray]:
        enc = self.text()
        ids, ids_2 = enc.tokenize(list(prompts))
        pe, te = self.encode_jit()(enc.params, enc.params_2, ids, ids_2)
        return {"prompt_embeds": np.asarray(pe), "text_embeds": np.asarray(te)}

    def empty_prompt(self) -> dict[str, np.ndarray]:
        return self._once("empty", lambda: {k: v[0] for k, v in self.encode([""]).items()})

    def vae(self):
        return self._once("vae", lambda: W.load_vae(self.c.model.path, param_dtype=np.float32,
                                                   dtype=_dtype(self.c.reward.vae_dtype),
                                                   variant=self.c.model.variant or None))

    def vae_module(self):
        def make():  # the module from vae/config.json alone (no weights), for tracing the reward
            cfg = json.loads((epath.Path(self.c.model.path) / "vae" / "config.json").read_text())
            return W.vae_from_config(cfg, _dtype(self.c.reward.vae_dtype))

        return self._once("vae_module", make)

    def eval_suite(self):
        from amd_jax.eval.t2i import TextToImageSuite

        return self._once("eval_suite", lambda: TextToImageSuite(self.c.eval))

    def scorer(self):
        from amd_jax.models.rewards.registry import load_reward

        return self._once("scorer", lambda: load_reward(self.c.reward.name, self.c.reward.path))

    def teacher(self):
        def load():
            _, params = W.load_unet(self.c.model.path, param_dtype=np.float32, variant=self.c.model.variant or None)
            return sdxl_unet.cast_params(params, _dtype(self.c.model.teacher_dtype))

        return self._once("teacher", load)


def _time_ids(config) -> np.ndarray:
    r = int(config.model.resolution)
    return np.asarray([r, r, 0, 0, r, r], np.float32)


def _check(config):
    m = config.model
    if not m.path:
        raise ConfigError("model.path is empty: set --config.model.path to a diffusers SDXL folder (local or gs://).")
    if m.resolution % 8:
        raise ConfigError(f"model.resolution={m.resolution} must be a multiple of 8.")
    if m.uncond not in ("zeros", "empty_prompt"):
        raise ConfigError(f"model.uncond={m.uncond!r}: use 'zeros' (DMD2) or 'empty_prompt'.")
    if (config.method == "amd" or config.reward.monitor) and not config.reward.name:
        raise ConfigError("method=amd (or reward.monitor) needs reward.name (e.g. 'hpsv2') and reward.path.")
    if config.gan.enabled and not config.data.real:
        raise ConfigError("gan.enabled needs data.real: per-caption real latents [N, 4, H/8, W/8] (.npy/.npz/"
                          ".safetensors); or set --config.gan.enabled=False.")
    if not config.data.path:
        raise ConfigError("data.path is empty: a caption file (.txt/.jsonl/.parquet, local or gs://) or tfds:NAME.")


def build(config) -> Models:
    _check(config)
    assets = Assets(config)
    assets.eval_suite()  # checks eval.* now (loads nothing), not after training
    ucfg = assets.unet_config()
    module = W.unet_from_config(ucfg, _dtype(config.model.compute_dtype))
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

    d = config.data
    if d.path.startswith("tfds:"):
        captions = P.tfds_captions(d.path, d.tfds_dir or None, d.field or "captions.text")
    else:
        captions = P.read_captions(d.path, d.field)
    embeddings = None
    if d.embeddings:
        raw = P.load_array_file(d.embeddings)
        embeddings = {"prompt_embeds": raw["prompt_embeds"],
                      "text_embeds": raw["text_embeds"] if "text_embeds" in raw else raw["pooled"]}
    real = None
    if d.real:
        raw = P.load_array_file(d.real)
        real = raw.get("latents", raw.get("array", next(iter(raw.values()))))
        if tuple(real.shape[1:]) != sample_shape:
            raise ConfigError(f"data.real latents have shape {real.shape[1:]}, expected {sample_shape}.")
    tokenize = {"reward_tokens": lambda p: assets.scorer().tokenize(p)} if use_reward else {}
    source = P.PromptSource(captions, seed=config.seed if d.seed < 0 else d.seed,
                            encode=None if embeddings is not None else assets.encode, embeddings=embeddings,
                            tokenize=tokenize, constants={"time_ids": _time_ids(config)}, real=real,
                            real_shape=sample_shape if real is None and config.gan.enabled else (1,),
                            local_rows=P.process_rows_fn(config.mesh.axes, config.mesh.shape))
    source.assets = assets
    return Models(student=den, critic=den, teacher=den, init_denoiser=module.init_weights, gan_head=gan_head,
                  init_gan_head=init_gan_head, reward=reward, sample_shape=sample_shape, data=source)


def frozen(config, models) -> dict:
    assets = models.data.assets
    out = {"teacher": assets.teacher(), "reward": None}
    if models.reward is not None:
        out["reward"] = {"vae": assets.vae()[1], "scorer": assets.scorer().params}
    return out


def eval_prompts(config, models, n: int) -> tuple[list[str], np.ndarray]:
    """n prompts, each caption `eval.samples_per_prompt` (K) times in a row, and each one's caption index."""
    k = max(int(config.eval.samples_per_prompt), 1)
    if config.eval.prompts:
        caps = P.read_captions(config.eval.prompts, config.data.field)
    else:  # the first captions of the data file (unshuffled)
        caps = [models.data.captions[i] for i in range(min(-(-n // k), models.data.num_captions))]
    groups = (np.arange(n) // k) % len(caps)
    return [caps[g] for g in groups], groups


def eval_conds(config, models, n: int) -> dict:
    prompts, _ = eval_prompts(config, models, n)
    src, assets = models.data, models.data.assets
    cond = {}
    bsz = max(int(config.global_batch), 1)
    for i in range(0, n, bsz):  # a fixed chunk size: one compile of the text encoder
        chunk = prompts[i:i + bsz]
        chunk = chunk + [""] * (bsz - len(chunk))
        part = assets.encode(chunk)
        for k, v in part.items():
            cond.setdefault(k, []).append(v[: min(bsz, n - i)])
    cond = {k: np.concatenate(v) for k, v in cond.items()}
    for k, tok in src.tokenize.items():
        cond[k] = np.asarray(tok(prompts))
    cond["time_ids"] = np.broadcast_to(_time_ids(config), (n, 6)).copy()
    return cond


@functools.lru_cache(maxsize=4)
def _decode_fn(module):
    return jax.jit(functools.partial(sdxl_vae.decode, module))


def decode_images(config, models, x, chunk: int = 8) -> np.ndarray:
    """Latents [N,4,h,w] -> uint8 images [N, H, W, 3] with the frozen VAE (host side, chunks of `chunk`)."""
    module, params = models.data.assets.vae()
    fn, out = _decode_fn(module), []
    x = np.asarray(x, np.float32)
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk]
        pad = chunk - len(part)
        img = np.asarray(fn(params, np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])))
        out.append(img[: len(part)])
    img = np.concatenate(out).transpose(0, 2, 3, 1)
    return np.round((img + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, cols: int = 8, zone=None) -> np.ndarray:
    n, h, w, _ = images.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = r * (h + 2), c * (w + 2)
        if zone is not None and zone[i]:  # Forbidden-Zone samples framed in red
            grid[y:y + h + 2, x:x + w + 2] = (255, 0, 0)
        grid[y + 1:y + 1 + h, x + 1:x + 1 + w] = im
    return grid


def evaluate(config, models, x, cond, rewards, zone, title="", save_dir=None):
    """The training reward's statistics, the eval suite's metrics (amd_jax/eval/t2i.py: FID, scorers, diversity)
    on every decoded image, and a grid of the first eval.grid_size; save_dir: also every image as a PNG."""
    suite = models.data.assets.eval_suite()
    full = bool(suite.scorer_paths or suite.inception_path or save_dir)
    n = len(x) if full else min(len(x), int(config.eval.grid_size))
    metrics = {"num_samples": int(len(x))}
    if rewards is not None:
        r = np.asarray(rewards, np.float64)
        metrics.update(reward_mean=float(r.mean()), reward_std=float(r.std()), reward_name=config.reward.name)
    if zone is not None:
        metrics["zone_fraction"] = float(np.mean(zone))
    images = decode_images(config, models, np.asarray(x)[:n])
    if full:
        prompts, groups = eval_prompts(config, models, len(x))
        metrics.update(suite.metrics(images, prompts, groups))
        if save_dir is not None:
            from amd_jax.eval.t2i import save_images

            save_images(save_dir, images, prompts)
    g = min(len(x), int(config.eval.grid_size))
    return metrics, {"samples": image_grid(images[:g], int(config.eval.grid_cols), None if zone is None else zone[:g])}


def experiment():
    from amd_jax.experiments import Experiment

    return Experiment(build=build, frozen=frozen, eval_conds=eval_conds, evaluate=evaluate)


def load_image(path, resolution: int) -> np.ndarray:
    """An image file (local or gs://) -> float32 [3, r, r] in [-1, 1]: resize the short side to r (bicubic,
    antialiased) and centre-crop, as SDXL training pipelines do."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(epath.Path(path).read_bytes())).convert("RGB")
    scale = resolution / min(img.size)
    w, h = max(resolution, round(img.width * scale)), max(resolution, round(img.height * scale))
    img = img.resize((w, h), Image.BICUBIC)
    left, top = (w - resolution) // 2, (h - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    return (np.asarray(img, np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def encode_real_latents(config, image_paths: list[str], out_path: str, batch_size: int = 8) -> np.ndarray:
    """The GAN's real samples (data.real): VAE posterior means of the images, row i for caption i, saved as
    {'latents': [N, 4, r/8, r/8]} .npz (r = model.resolution). One row per caption of data.path."""
    assets = Assets(config)
    module, params = assets.vae()
    enc = jax.jit(functools.partial(sdxl_vae.encode, module))
    # image size = latent size x the VAE's downsampling (SDXL: 128 x 8 = model.resolution; the tiny VAE: x 2)
    r, parts = int(config.model.resolution) // 8 * 2 ** (len(module.block_out_channels) - 1), []
    for i in range(0, len(image_paths), batch_size):
        chunk = np.stack([load_image(p, r) for p in image_paths[i:i + batch_size]])
        pad = batch_size - len(chunk)  # fixed batch: one compilation
        z = np.asarray(enc(params, np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])))
        parts.append(z[: len(chunk)])
        log.info("encoded %d/%d images", i + len(chunk), len(image_paths))
    latents = np.concatenate(parts)
    P.save_embeddings(out_path, {"latents": latents})
    return latents


def precompute_embeddings(config, out_path: str, batch_size: int = 64) -> None:
    """Encode every caption of data.path once and save {'prompt_embeds', 'text_embeds'} for data.embeddings."""
    assets = Assets(config)
    caps = P.read_captions(config.data.path, config.data.field)
    parts = {}
    for i in range(0, len(caps), batch_size):
        chunk = caps[i:i + batch_size]
        enc = assets.encode(chunk + [""] * (batch_size - len(chunk)))
        for k, v in enc.items():
            parts.setdefault(k, []).append(v[: len(chunk)])
    P.save_embeddings(out_path, {k: np.concatenate(v) for k, v in parts.items()})
