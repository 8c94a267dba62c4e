"""The Wan task's files, loaded lazily and once: the transformer's config and teacher weights, the umT5 tokenizer
and encoder (prompts -> embeddings on the mesh, and the negative prompt), the VAE, the reward scorer. Abstract
mode (the TPU plan): architectures only, Wan2.1-T2V-1.3B's where model.path is empty; no weight is read."""

from __future__ import annotations

import os

import jax
import numpy as np

from amd_jax.models.common.dtypes import dtype
from amd_jax.models.common.hf_folders import local_folder, read_config
from amd_jax.models.common.params import cast_params
from amd_jax.models.umt5 import encoder as umt5
from amd_jax.models.umt5 import weights as umt5_weights
from amd_jax.models.wan import vae as wan_vae
from amd_jax.models.wan import vae_weights
from amd_jax.models.wan import weights as wan_weights
from amd_jax.models.wan.transformer import WAN21_T2V_1_3B, WanConfig

TOKEN_KEYS = ("input_ids", "attention_mask")  # what a batch carries instead of the text embeddings
TOKENIZER = "tokenizer"


class Assets:
    def __init__(self, config, abstract: bool = False):
        self.c, self.abstract = config, abstract
        self._cache = {}

    def _once(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    # ------------------------------------------------------------------------------------------ transformer
    def transformer_config(self) -> WanConfig:
        """The transformer of model.path (Wan2.1-T2V-1.3B's in abstract mode without one), with the run's knobs:
        float32 parameters (student, critic), model.compute_dtype activations, model.remat."""
        m = self.c.model
        run = dict(dtype=m.compute_dtype, param_dtype="float32", remat=m.remat)

        def make():
            if self.abstract and not m.path:
                return WanConfig(**WAN21_T2V_1_3B, **run)
            folder = wan_weights.transformer_folder(m.path)
            return WanConfig.from_diffusers(read_config(folder, ""), what=f"{folder}/config.json", **run)

        return self._once("transformer_config", make)

    def teacher(self):
        """The frozen teacher: model.path's transformer in model.teacher_dtype (checked tensor by tensor)."""
        def load():
            _, params = wan_weights.load_transformer(self.c.model.path, param_dtype="float32")
            return cast_params(params, dtype(self.c.model.teacher_dtype))

        return self._once("teacher", load)

    # ------------------------------------------------------------------------------------------------ text
    def text(self) -> tuple[umt5.UMT5Config, dict]:
        """(the umT5 config, its float32 host parameters), activations in model.text_dtype."""
        return self._once("text", lambda: umt5_weights.load_text_encoder(
            self.c.model.path, param_dtype="float32", dtype=self.c.model.text_dtype))

    def text_params(self) -> dict:
        return self.text()[1]

    def tokenizer(self):
        def load():
            from transformers import AutoTokenizer

            folder = local_folder(self.c.model.path, (TOKENIZER,)) / TOKENIZER
            return AutoTokenizer.from_pretrained(os.fspath(folder))

        return self._once("tokenizer", load)

    def tokenize(self, prompts: list[str]) -> dict[str, np.ndarray]:
        """int32 input_ids and attention_mask [n, model.text_len], padded and truncated as WanPipeline."""
        out = self.tokenizer()(list(prompts), padding="max_length", max_length=int(self.c.model.text_len),
                               truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="np")
        return {k: np.asarray(out[k], np.int32) for k in TOKEN_KEYS}

    def condition(self, params, cond: dict) -> dict:
        """Token ids -> {'text': umT5 embeddings [n, L, D] with the padding zeroed}, pure and jit-able (the session
        runs it on the mesh, amd_jax/conditioning.py); other keys (reward_tokens) pass through."""
        ucfg = self.text()[0]
        text = umt5.encode(ucfg, params, cond["input_ids"], cond["attention_mask"])
        return {**{k: v for k, v in cond.items() if k not in TOKEN_KEYS}, "text": text}

    def encode(self, prompts: list[str]) -> dict[str, np.ndarray]:
        """Host-side encoding on this process's first device (precomputed embeddings, the negative prompt)."""
        fn = self._once("encode_fn", lambda: jax.jit(self.condition))
        params = self._once("text_device", lambda: jax.device_put(self.text_params(), jax.local_devices()[0]))
        return {k: np.asarray(v) for k, v in fn(params, self.tokenize(prompts)).items()}

    def negative(self) -> np.ndarray:
        """model.negative_prompt's embeddings [L, text_dim] for the teacher's CFG (zeros in abstract mode: the plan
        compiles the same program)."""
        if self.abstract:
            return np.zeros((int(self.c.model.text_len), self.transformer_config().text_dim), np.float32)
        return self._once("negative", lambda: self.encode([self.c.model.negative_prompt])["text"][0])

    # ------------------------------------------------------------------------------------------ VAE, reward
    def vae(self) -> tuple[wan_vae.WanVAE, dict]:
        def load():
            cfg, params = vae_weights.load_vae(self.c.model.path, param_dtype="float32", dtype=self.c.reward.vae_dtype)
            return wan_vae.WanVAE(cfg), params

        return self._once("vae", load)

    def vae_module(self) -> wan_vae.WanVAE:
        """The VAE from its config alone (Wan2.1's built-in config in abstract mode without model.path)."""
        def make():
            if self.abstract and not self.c.model.path:
                return wan_vae.WanVAE(wan_vae.WanVAEConfig(dtype=self.c.reward.vae_dtype))
            folder = vae_weights.vae_folder(self.c.model.path)
            return wan_vae.WanVAE(wan_vae.WanVAEConfig.from_diffusers(read_config(folder, ""),
                                                                      dtype=self.c.reward.vae_dtype))

        return self._once("vae_module", make)

    def scorer(self):
        from amd_jax.models.rewards.registry import load_reward

        if self.abstract:
            from amd_jax.models.rewards.clip_scorers import architecture_scorer

            return self._once("scorer", lambda: architecture_scorer(self.c.reward.name, self.c.reward.path))
        return self._once("scorer", lambda: load_reward(self.c.reward.name, self.c.reward.path))
