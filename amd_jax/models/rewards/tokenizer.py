"""CLIP BPE tokenisation to fixed-length int32 arrays (host side, numpy; feed the result to the jitted scorer).

Uses transformers' ``CLIPTokenizerFast`` built from ``tokenizer.json`` or ``vocab.json`` + ``merges.txt`` of the
model folder. Output: ``[start] + tokens + [end]``, truncated to ``context_length`` keeping ``[end]`` last, then
padded with ``pad_id`` -- the layout of ``open_clip.tokenize`` (pad 0) and of ``CLIPProcessor(padding=
"max_length", truncation=True)``. Difference from open_clip's ``SimpleTokenizer``: open_clip also runs
``ftfy.fix_text`` and ``html.unescape`` on the prompt; the fast tokenizer applies NFC + lower-casing only, so
mojibake or HTML entities in a prompt may tokenise differently (plain prompts give identical ids, tested).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from amd_jax.models.rewards.weights import as_path


@dataclasses.dataclass
class CLIPTokenizer:
    """Callable prompts -> [N, context_length] int32 ids."""

    fast: object
    context_length: int = 77
    pad_id: int = 0

    def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
        if isinstance(prompts, str):
            prompts = [prompts]
        enc = self.fast(list(prompts), truncation=True, max_length=self.context_length, padding=False)
        out = np.full((len(prompts), self.context_length), self.pad_id, np.int32)
        for i, ids in enumerate(enc["input_ids"]):
            out[i, : len(ids)] = ids
        return out


def load_tokenizer(folder, context_length: int = 77, pad_id: int | None = None) -> CLIPTokenizer:
    """CLIPTokenizer of a folder; `pad_id=None` uses the tokenizer's own pad token (transformers layout)."""
    from transformers import CLIPTokenizerFast

    folder = as_path(folder)
    kwargs = dict(bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    if (folder / "tokenizer.json").exists():
        fast = CLIPTokenizerFast(tokenizer_file=_local(folder / "tokenizer.json"), **kwargs)
    elif (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        fast = CLIPTokenizerFast(vocab_file=_local(folder / "vocab.json"), merges_file=_local(folder / "merges.txt"),
                                 **kwargs)
    else:
        raise FileNotFoundError(f"no tokenizer in {folder}: need tokenizer.json or vocab.json + merges.txt")
    if pad_id is None:
        special = folder / "special_tokens_map.json"
        pad_id = fast.eos_token_id
        if special.exists():
            import json

            pad = json.loads(special.read_text()).get("pad_token")
            pad = pad.get("content") if isinstance(pad, dict) else pad
            if pad is not None:
                pad_id = fast.convert_tokens_to_ids(pad)
    return CLIPTokenizer(fast, context_length, int(pad_id))


def _local(path) -> str:
    """A local filename for `path` (gs:// files are copied to a temporary folder first)."""
    if "://" not in str(path):
        return str(path)
    import tempfile

    tmp = tempfile.mkdtemp(prefix="amd_jax_tok_")
    dst = f"{tmp}/{path.name}"
    with open(dst, "wb") as f:
        f.write(path.read_bytes())
    return dst
