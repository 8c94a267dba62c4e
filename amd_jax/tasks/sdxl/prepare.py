"""Offline preparation of SDXL inputs (python -m amd_jax.tools.prepare_sdxl): the GAN's real latents from images, and
precomputed prompt embeddings."""

from __future__ import annotations

import functools
import logging

import jax
import numpy as np
from etils import epath

from amd_jax import batching, tensor_files
from amd_jax.data import prompts as P
from amd_jax.models.vae import autoencoder as sdxl_vae
from amd_jax.tasks.sdxl.assets import Assets

log = logging.getLogger("amd_jax")


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
    enc = functools.partial(jax.jit(functools.partial(sdxl_vae.encode, module)), params)
    # image size = latent size x the VAE's downsampling (SDXL: 128 x 8 = model.resolution; the tiny VAE: x 2)
    r, parts = int(config.model.resolution) // 8 * 2 ** (len(module.block_out_channels) - 1), []
    for i in range(0, len(image_paths), batch_size):  # images read one batch at a time, not all at once
        chunk = np.stack([load_image(p, r) for p in image_paths[i:i + batch_size]])
        parts.append(batching.map_fixed_batches(enc, chunk, batch_size))  # padded to batch_size: one compilation
        log.info("encoded %d/%d images", i + len(chunk), len(image_paths))
    latents = np.concatenate(parts)
    tensor_files.write(out_path, {"latents": latents})
    return latents


def precompute_embeddings(config, out_path: str, batch_size: int = 64) -> None:
    """Encode every caption of data.path once and save {'prompt_embeds', 'text_embeds'} for data.embeddings."""
    assets = Assets(config)
    caps = P.read_captions(config.data.path, config.data.field)
    tensor_files.write(out_path, batching.map_fixed_batches(assets.encode, caps, batch_size, fill=""))
