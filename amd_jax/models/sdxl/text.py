"""SDXL text conditioning, as diffusers' StableDiffusionXLPipeline.encode_prompt (clip_skip=None, no LoRA).

Each prompt is tokenized by both tokenizers (pad to 77 with truncation: CLIP-L pads with <|endoftext|>, bigG
with "!"), run through CLIP-L (`FlaxCLIPTextModel`) and OpenCLIP bigG (`FlaxCLIPTextModelWithProjection`), and

    prompt_embeds = concat(penultimate hidden state of CLIP-L, penultimate hidden state of bigG)  [B, 77, 768+1280]
    text_embeds   = bigG's projected pooled embedding (at the first end-of-text token)           [B, 1280]

`time_ids` builds the micro-conditioning vector (original size, crop top-left, target size) per sample.
Note: the slow CLIPTokenizer cleans text with `ftfy` when it is installed and with a basic cleaner otherwise;
both agree on ordinary ASCII prompts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from amd_jax.models.sdxl import weights


def load_tokenizer(path, subfolder: str):
    """The slow CLIPTokenizer of `<path>/<subfolder>` (vocab.json, merges.txt, tokenizer_config.json)."""
    from transformers import CLIPTokenizer

    folder = weights.local_folder(path, (subfolder,)) / subfolder
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"Missing tokenizer file {folder / name}.")
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


@dataclasses.dataclass
class SDXLTextEncoders:
    """Both SDXL tokenizers and text encoders. `encode_ids` is pure and jit-able; `__call__` takes strings."""

    tokenizer: Any
    tokenizer_2: Any
    encoder: Any
    encoder_2: Any
    params: Any
    params_2: Any

    @classmethod
    def load(cls, path, *, param_dtype=np.float32, dtype=None, variant: str | None = None) -> "SDXLTextEncoders":
        folder = weights.local_folder(path, ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"))
        enc, p = weights.load_text_encoder(folder, "text_encoder", param_dtype=param_dtype, dtype=dtype,
                                           variant=variant)
        enc2, p2 = weights.load_text_encoder(folder, "text_encoder_2", param_dtype=param_dtype, dtype=dtype,
                                             variant=variant)
        return cls(load_tokenizer(folder, "tokenizer"), load_tokenizer(folder, "tokenizer_2"), enc, enc2, p, p2)

    def tokenize(self, prompts: Sequence[str] | str) -> tuple[np.ndarray, np.ndarray]:
        """int32 token ids [B, 77] for each tokenizer (padding='max_length', truncation=True)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return tuple(
            np.asarray(tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                           return_tensors="np").input_ids, np.int32)
            for tok in (self.tokenizer, self.tokenizer_2))

    def encode_ids(self, params, params_2, ids: jax.Array, ids_2: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(prompt_embeds [B, 77, D1+D2], text_embeds [B, P2]) in float32 from token ids."""
        out = self.encoder(ids, params=params, output_hidden_states=True)
        out2 = self.encoder_2(ids_2, params=params_2, output_hidden_states=True)
        prompt_embeds = jnp.concatenate([out.hidden_states[-2], out2.hidden_states[-2]], axis=-1)
        return prompt_embeds.astype(jnp.float32), out2.text_embeds.astype(jnp.float32)

    def __call__(self, prompts: Sequence[str] | str) -> tuple[jax.Array, jax.Array]:
        """encode_prompt for strings: tokenize, then a jitted `encode_ids` (compiled once per batch size)."""
        if getattr(self, "_encode_jit", None) is None:
            self._encode_jit = jax.jit(self.encode_ids)
        ids, ids_2 = self.tokenize(prompts)
        return self._encode_jit(self.params, self.params_2, ids, ids_2)


def time_ids(batch: int, original_size=(1024, 1024), crop_top_left=(0, 0), target_size=(1024, 1024)) -> jax.Array:
    """SDXL micro-conditioning [B, 6] float32: (orig h, orig w, crop top, crop left, target h, target w).

    Each argument is one (h, w) pair for the whole batch or an array [B, 2] of per-sample pairs.
    """
    parts = [np.broadcast_to(np.asarray(a, np.float32), (batch, 2)) for a in (original_size, crop_top_left,
                                                                              target_size)]
    return jnp.asarray(np.concatenate(parts, axis=1))

