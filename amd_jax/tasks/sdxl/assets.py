"""The SDXL task's files, loaded lazily and once: text encoders, VAE, reward scorer, teacher UNet, eval suite."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from amd_jax.errors import ConfigError
from amd_jax.models.sdxl import text as sdxl_text
from amd_jax.models.sdxl import unet as sdxl_unet
from amd_jax.models.sdxl import weights as W
from amd_jax.tasks.sdxl import arch

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype(name):
    if name not in _DTYPES:
        raise ConfigError(f"dtype {name!r}: use one of {sorted(_DTYPES)}.")
    return _DTYPES[name]


class Assets:
    """Everything loaded from disk, lazily and once: text encoders, VAE, reward scorer, teacher params."""

    def __init__(self, config, abstract: bool = False):
        """`abstract` (the plan): only architectures, from the config.json files of model.path and reward.path
        (SDXL base's and the reward's built-in ones where the path is empty); the abstract task loads no weight."""
        self.c, self.abstract = config, abstract
        self._cache = {}

    def _once(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def _arch_config(self, part: str) -> dict:
        """model.path/<part>/config.json; in abstract mode without model.path, SDXL base's (arch.py)."""
        if self.abstract and not self.c.model.path:
            return {"unet": arch.SDXL_BASE_UNET, "vae": arch.SDXL_BASE_VAE}[part]
        return json.loads((epath.Path(self.c.model.path) / part / "config.json").read_text())

    def unet_config(self) -> dict:
        return self._once("unet_config", lambda: self._arch_config("unet"))

    def text(self) -> sdxl_text.SDXLTextEncoders:
        def load():
            enc = sdxl_text.SDXLTextEncoders.load(self.c.model.path, param_dtype=np.float32,
                                                  dtype=dtype(self.c.model.text_dtype),
                                                  variant=self.c.model.variant or None)
            # one copy on this process's first device (not re-sent every call)
            dev = jax.local_devices()[0]
            enc.params, enc.params_2 = jax.device_put((enc.params, enc.params_2), dev)
            return enc

        return self._once("text", load)

    def encode(self, prompts: list[str]) -> dict[str, np.ndarray]:
        pe, te = self.text()(list(prompts))  # the encoders' own jitted encode_ids, compiled once per batch size
        return {"prompt_embeds": np.asarray(pe), "text_embeds": np.asarray(te)}

    def empty_prompt(self) -> dict[str, np.ndarray]:
        if self.abstract:  # the shapes of the real embeddings: the plan compiles the same program
            width, pooled = arch.text_dims(self.unet_config())
            return {"prompt_embeds": np.zeros((arch.PROMPT_TOKENS, width), np.float32),
                    "text_embeds": np.zeros((pooled,), np.float32)}
        return self._once("empty", lambda: {k: v[0] for k, v in self.encode([""]).items()})

    def vae(self):
        return self._once("vae", lambda: W.load_vae(self.c.model.path, param_dtype=np.float32,
                                                   dtype=dtype(self.c.reward.vae_dtype),
                                                   variant=self.c.model.variant or None))

    def vae_module(self):
        def make():  # the module from vae/config.json alone (no weights), for tracing the reward
            return W.vae_from_config(self._arch_config("vae"), dtype(self.c.reward.vae_dtype))

        return self._once("vae_module", make)

    def eval_suite(self):
        from amd_jax.eval.t2i import TextToImageSuite

        return self._once("eval_suite", lambda: TextToImageSuite(self.c.eval))

    def scorer(self):
        """The reward scorer; in abstract mode its architecture only (params None)."""
        from amd_jax.models.rewards.registry import load_reward

        if self.abstract:
            from amd_jax.models.rewards.clip_scorers import architecture_scorer

            return self._once("scorer", lambda: architecture_scorer(self.c.reward.name, self.c.reward.path))
        return self._once("scorer", lambda: load_reward(self.c.reward.name, self.c.reward.path))

    def teacher(self):
        def load():
            _, params = W.load_unet(self.c.model.path, param_dtype=np.float32, variant=self.c.model.variant or None)
            return sdxl_unet.cast_params(params, dtype(self.c.model.teacher_dtype))

        return self._once("teacher", load)


def time_ids(config) -> np.ndarray:
    """One sample's micro-conditioning [6] at model.resolution, uncropped (models/sdxl/text.py: time_ids)."""
    r = int(config.model.resolution)
    return np.asarray(sdxl_text.time_ids(1, (r, r), (0, 0), (r, r))[0], np.float32)
