"""Reading reward-model folders (local or gs://) and turning transformers (CLIP, ViT) tensors into Flax params.

Only tensor formats that cannot run code are read: ``.safetensors`` and ``.npz`` (``allow_pickle=False``).
PyTorch pickles (``.pt``/``.bin``, e.g. HPSv2's ``HPS_v2_compressed.pt``) must be converted once, on a machine
with torch: ``python -m amd_jax.tools.convert_openclip --src=HPS_v2_compressed.pt --out=OUT_DIR
--arch=ViT-H-14 --tokenizer=DIR`` (checks every tensor against the architecture, writes the folder ``load_reward``
reads).

Configs are parsed as plain JSON (``CLIPConfig.from_dict``), never through ``from_pretrained``; no remote code.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import flax
import numpy as np
from etils import epath
from flax.traverse_util import flatten_dict, unflatten_dict

from amd_jax import tensor_files


def as_path(path) -> epath.Path:
    """epath.Path of a local folder or a gs:// URI."""
    return epath.Path(path)


def find_file(folder, candidates: Sequence[str], suffixes: Sequence[str] = (), what: str = "file") -> epath.Path:
    """First existing `candidates` name in `folder`, else the single file ending in one of `suffixes`."""
    folder = as_path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"reward model folder {folder} does not exist or is not a directory")
    for name in candidates:
        if (folder / name).exists():
            return folder / name
    found = sorted(p for p in folder.iterdir() if any(p.name.endswith(s) for s in suffixes)) if suffixes else []
    if len(found) == 1:
        return found[0]
    hint = f"; found {[p.name for p in found]}, expected exactly one" if found else ""
    raise FileNotFoundError(f"no {what} in {folder}: looked for {list(candidates)} or *{'/*'.join(suffixes)}{hint}")


def read_json(path) -> dict[str, Any]:
    return json.loads(as_path(path).read_text())


def load_tensors(path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors or .npz file as float32 numpy arrays (fp16/bf16 checkpoints are upcast)."""
    path = as_path(path)
    if not path.name.endswith((".safetensors", ".npz")):
        raise ValueError(f"unsupported weight file {path.name}: convert it to .safetensors or .npz (see weights.py)")
    raw = tensor_files.read(path)
    out = {}
    for k, v in raw.items():
        if not np.issubdtype(v.dtype, np.floating):
            if k.endswith(("position_ids", "num_batches_tracked")):  # integer buffers (old CLIP, BatchNorm)
                out[k] = v
                continue
            raise ValueError(f"tensor {k} in {path.name} has non-float dtype {v.dtype}")
        out[k] = np.asarray(v, np.float32)
    return out


# Non-parameter buffers that transformers CLIP checkpoints may contain.
_HF_BUFFERS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def convert_hf_state_dict(state: Mapping[str, np.ndarray], abstract_params, what: str = "CLIP") -> dict[str, Any]:
    """transformers (PyTorch-layout) tensors -> the Flax model's params, validated against `abstract_params`.

    Works for models whose Flax param paths are the PyTorch names with '.' -> '/' (CLIPModel, ViT*); `what`
    names the model in errors.
    Linear weights are transposed into Dense kernels, the patch conv goes OIHW -> HWIO, LayerNorm weight -> scale,
    Embedding weight -> embedding. Raises ValueError naming every missing/unexpected/mis-shaped tensor.
    """
    expected = {"/".join(k): v for k, v in flatten_dict(_unfreeze(abstract_params)).items()}
    # Flax path (minus its leaf name) -> expected leaf names, to tell Dense/Conv from LayerNorm/Embed.
    leaves: dict[str, set] = {}
    for path in expected:
        head, _, leaf = path.rpartition("/")
        leaves.setdefault(head, set()).add(leaf)
    params, extra, bad, bad_keys = {}, [], [], set()
    for key, value in state.items():
        if key in _HF_BUFFERS:
            continue
        head, _, leaf = key.replace(".", "/").rpartition("/")
        if leaf == "weight":
            kinds = leaves.get(head, set())
            if "kernel" in kinds:
                leaf = "kernel"
                value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
            elif "scale" in kinds:
                leaf = "scale"
            elif "embedding" in kinds:
                leaf = "embedding"
        flax_key = f"{head}/{leaf}" if head else leaf
        if flax_key not in expected:
            extra.append(key)
            continue
        if tuple(value.shape) != tuple(expected[flax_key].shape):
            bad.append(f"{key}: expected {_torch_shape(expected[flax_key].shape, leaf)}, got {tuple(state[key].shape)}")
            bad_keys.add(flax_key)
            continue
        params[flax_key] = value
    missing = sorted(set(expected) - set(params) - bad_keys)
    problems = []
    if missing:
        problems.append(f"missing tensors (Flax paths): {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if extra:
        problems.append(f"unexpected tensors: {sorted(extra)[:8]}{' ...' if len(extra) > 8 else ''}")
    if bad:
        problems.append("shape mismatches: " + "; ".join(bad[:8]))
    if problems:
        raise ValueError(f"transformers {what} checkpoint does not match its config: " + " | ".join(problems))
    return unflatten_dict({tuple(k.split("/")): v for k, v in params.items()})


def _torch_shape(flax_shape, leaf):
    if leaf == "kernel" and len(flax_shape) == 2:
        return tuple(flax_shape[::-1])
    if leaf == "kernel" and len(flax_shape) == 4:
        return (flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1])
    return tuple(flax_shape)


def _unfreeze(tree):
    """Plain nested dicts of a (possibly frozen) params tree."""
    return flax.core.unfreeze(tree)


def check_tree(params, abstract_params, what: str) -> None:
    """Raise ValueError unless `params` has exactly the paths and shapes of `abstract_params`."""
    got = {"/".join(k): np.shape(v) for k, v in flatten_dict(_unfreeze(params)).items()}
    exp = {"/".join(k): tuple(v.shape) for k, v in flatten_dict(_unfreeze(abstract_params)).items()}
    problems = []
    if set(exp) - set(got):
        problems.append(f"missing {sorted(set(exp) - set(got))[:8]}")
    if set(got) - set(exp):
        problems.append(f"unexpected {sorted(set(got) - set(exp))[:8]}")
    bad = [f"{k}: expected {exp[k]}, got {got[k]}" for k in sorted(set(exp) & set(got)) if tuple(got[k]) != exp[k]]
    if bad:
        problems.append("shape mismatches " + "; ".join(bad[:8]))
    if problems:
        raise ValueError(f"{what} params do not match the Flax model: " + " | ".join(problems))
