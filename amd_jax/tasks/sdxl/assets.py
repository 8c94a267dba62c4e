"""The SDXL task's files, loaded lazily and once: text encoders, VAE, reward scorer, teacher UNet, eval suite."""

from __future__ import annotations

import json

import jax
import numpy as np
from etils import epath

from amd_jax.models.sdxl import text as sdxl_text
from amd_jax.models.common.params import cast_params
from amd_jax.models.common.dtypes import dtype
from amd_jax.models.sdxl import unet_flax
from amd_jax.models.sdxl import weights as W
from amd_jax.models.vae import weights as vae_weights
from amd_jax.tasks.sdxl import arch

TOKEN_KEYS = ("input_ids", "input_ids_2")  # a batch's token ids, replaced by the embeddings


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
        """Both tokenizers and text encoders; the parameters stay on the host (`text_params`): the session places
        them on the mesh once, and `encode` keeps its own copy on one device only when it is used."""
        return self._once("text", lambda: sdxl_text.SDXLTextEncoders.load(
            self.c.model.path, param_dtype=np.float32, dtype=dtype(self.c.model.text_dtype),
            variant=self.c.model.variant or None))

    def text_params(self) -> dict:
        """The two text encoders' host parameters, the first argument of `condition`."""
        enc = self.text()
        return {"text_encoder": enc.params, "text_encoder_2": enc.params_2}

    def tokenize(self, prompts: list[str]) -> dict[str, np.ndarray]:
        """What a batch carries instead of embeddings: int32 token ids [n, 77] of each tokenizer (cheap, host)."""
        ids, ids_2 = self.text().tokenize(list(prompts))
        return {"input_ids": ids, "input_ids_2": ids_2}

    def condition(self, params: dict, cond: dict) -> dict:
        """Token ids -> embeddings, pure and jit-able (the session runs it on the mesh, amd_jax/conditioning.py):
        `cond` with prompt_embeds [n, 77, D1+D2] and text_embeds [n, P2] in place of TOKEN_KEYS; the other keys
        (time_ids, reward_tokens) pass through."""
        pe, te = self.text().encode_ids(params["text_encoder"], params["text_encoder_2"], cond["input_ids"],
                                        cond["input_ids_2"])
        rest = {k: v for k, v in cond.items() if k not in TOKEN_KEYS}
        return {**rest, "prompt_embeds": pe, "text_embeds": te}

    def encode(self, prompts: list[str]) -> dict[str, np.ndarray]:
        """Host-side encoding on this process's first device (offline `precompute_embeddings`, the evaluation
        conditions of a run on precomputed embeddings): `condition` jitted, with one device copy of the parameters
        (made on first use, then kept)."""
        fn = self._once("encode_fn", lambda: jax.jit(self.condition))
        params = self._once("text_device", lambda: jax.device_put(self.text_params(), jax.local_devices()[0]))
        return {k: np.asarray(v) for k, v in fn(params, self.tokenize(prompts)).items()}

    def empty_prompt(self) -> dict[str, np.ndarray]:
        """The empty prompt's embeddings (one row, no batch axis), for model.uncond='empty_prompt'; the host
        parameters go to a device for this one call only, so no device keeps a copy. Abstract mode (the plan): zeros
        of the real embeddings' shapes (the plan compiles the same program)."""
        if self.abstract:
            width, pooled = arch.text_dims(self.unet_config())
            return {"prompt_embeds": np.zeros((arch.PROMPT_TOKENS, width), np.float32),
                    "text_embeds": np.zeros((pooled,), np.float32)}

        def one():
            out = jax.jit(self.condition)(self.text_params(), self.tokenize([""]))
            return {k: np.asarray(out[k][0]) for k in ("prompt_embeds", "text_embeds")}

        return self._once("empty", one)

    def vae(self):
        return self._once("vae", lambda: vae_weights.load_vae(self.c.model.path, param_dtype=np.float32,
                                                   dtype=dtype(self.c.reward.vae_dtype),
                                                   variant=self.c.model.variant or None))

    def vae_module(self):
        def make():  # the module from vae/config.json alone (no weights), for tracing the reward
            return vae_weights.vae_from_config(self._arch_config("vae"), dtype(self.c.reward.vae_dtype))

        return self._once("vae_module", make)

    def eval_suite(self):
        from amd_jax.metrics.t2i import TextToImageSuite

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
            if self.c.model.unet_impl == "owned" and self.c.model.unet_scan:  # the scanned module's layer stacks
                params = unet_flax.stack_layers(params)
            return cast_params(params, dtype(self.c.model.teacher_dtype))

        return self._once("teacher", load)


def time_ids(config) -> np.ndarray:
    """One sample's micro-conditioning [6] at model.resolution, uncropped (models/sdxl/text.py: time_ids)."""
    r = int(config.model.resolution)
    return np.asarray(sdxl_text.time_ids(1, (r, r), (0, 0), (r, r))[0], np.float32)
