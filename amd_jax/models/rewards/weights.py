"""Reading reward-model folders (local or gs://) and turning transformers (CLIP, ViT) tensors into Flax params.

Only tensor formats that cannot run code are read: ``.safetensors`` and ``.npz`` (``allow_pickle=False``).
PyTorch pickles (``.pt``/``.bin``, e.g. HPSv2's ``HPS_v2_compressed.pt``) must be converted once, on a machine
with torch: ``python -m amd_jax.tools.convert_openclip --src=HPS_v2_compressed.pt --out=OUT_DIR
--arch=ViT-H-14 --tokenizer=DIR`` (checks every tensor against the architecture, writes the folder ``load_reward``
reads).

Configs are parsed as plain JSON (``CLIPConfig.from_dict``), never through ``from_pretrained``; no remote code.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import flax
import numpy as np
from etils import epath
from flax.traverse_util import flatten_dict, unflatten_dict

from amd_jax import tensor_files
from amd_jax.models.common import state_dict


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


_HF_WORDING = state_dict.Wording(
    header="transformers {what} checkpoint does not match its config: ", groups=True, limit=8,
    sort=("missing", "unexpected"), missing="missing tensors (Flax paths): {names}{more}",
    unexpected="unexpected tensors: {names}{more}", misshaped="shape mismatches: {items}")


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
    # Compared in the checkpoint's names (Flax layout): got = every tensor, want = the reached parameters under the
    # name that reached them, then the unreached ones under their Flax path.
    params, got, want, torch_want, reached = {}, {}, {}, {}, set()
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
        got[key] = tuple(value.shape)
        if flax_key not in expected:
            continue
        want[key] = tuple(expected[flax_key].shape)
        torch_want[key] = _torch_shape(expected[flax_key].shape, leaf)
        reached.add(flax_key)
        if got[key] == want[key]:
            params[flax_key] = value
    want.update({k: v for k, v in expected.items() if k not in reached})
    wording = dataclasses.replace(_HF_WORDING, item=lambda name, g, w: (
        f"{name}: expected {torch_want[name]}, got {tuple(state[name].shape)}"))
    state_dict.check(got, want, wording, error=ValueError, what=what)
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


_TREE_WORDING = state_dict.Wording(
    header="{what} params do not match the Flax model: ", groups=True, limit=8, sort=state_dict.KINDS,
    missing="missing {names}", unexpected="unexpected {names}", misshaped="shape mismatches {items}")


def check_tree(params, abstract_params, what: str) -> None:
    """Raise ValueError unless `params` has exactly the paths and shapes of `abstract_params`."""
    got = {"/".join(k): np.shape(v) for k, v in flatten_dict(_unfreeze(params)).items()}
    exp = {"/".join(k): tuple(v.shape) for k, v in flatten_dict(_unfreeze(abstract_params)).items()}
    state_dict.check(got, exp, _TREE_WORDING, error=ValueError, what=what)
