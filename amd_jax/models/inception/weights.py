"""pytorch-fid's Inception weights -> Flax variables of models/inception/network.py, without torch.

The file a user must provide is pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (from
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth),
converted once, on a machine with torch, by
``python -m amd_jax.tools.convert_inception --src=in.pth --out=out.safetensors``.
``load_inception(path)`` then reads ``out.safetensors`` (or an ``.npz`` with the same keys) from a local path or
``gs://`` and needs no torch. Every key and shape is checked (models/common/state_dict.py): a wrong file raises one
ValueError listing every missing, unexpected and mis-shaped tensor.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from amd_jax import tensor_files
from amd_jax.models.common.state_dict import Wording, check
from amd_jax.models.inception.network import INPUT_SIZE, InceptionV3

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# Keys of the pytorch-fid state dict that the network never uses (BN step counters, the logits' bias: ADM's and
# torch-fidelity's Inception Score use the unbiased logits pool3 @ fc.weight.T). fc.weight is used by heads=True.
_IGNORED_SUFFIXES = (".num_batches_tracked",)
_IGNORED_KEYS = ("fc.weight", "fc.bias")


def _torch_name(collection: str, path: Sequence[str]) -> tuple[str, str]:
    """Map a Flax leaf (collection, path) to (torch key, kind) where kind tells how to transform the array."""
    *mods, leaf = path
    prefix = ".".join(mods)
    table = {
        ("params", "kernel"): ("weight", "conv"),
        ("params", "scale"): ("weight", "plain"),
        ("params", "bias"): ("bias", "plain"),
        ("batch_stats", "mean"): ("running_mean", "plain"),
        ("batch_stats", "var"): ("running_var", "plain"),
    }
    if (collection, leaf) not in table:
        raise KeyError(f"unexpected Flax variable {collection}/{'/'.join(path)}")
    suffix, kind = table[(collection, leaf)]
    return f"{prefix}.{suffix}", kind


@functools.lru_cache(maxsize=16)
def _expected(module: nn.Module, input_hw: tuple[int, int], in_channels: int) -> dict:
    """torch key -> (Flax path, kind, Flax shape) for every variable of ``module`` (jax.eval_shape, cached)."""
    shapes = jax.eval_shape(
        lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_hw, in_channels), jnp.float32)))
    wanted = {}
    for kp, sds in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        names = [k.key for k in kp]
        key, kind = _torch_name(names[0], names[1:])
        kind = "dense" if kind == "conv" and len(sds.shape) == 2 else kind  # the fc head of heads=True
        wanted[key] = (tuple(names), kind, tuple(sds.shape))
    return wanted


def torch_key_shapes(module: nn.Module | None = None, input_hw=(INPUT_SIZE, INPUT_SIZE), in_channels: int = 3):
    """The torch state-dict keys (and torch-layout shapes) that ``convert_state_dict`` needs for ``module``."""
    wanted = _expected(InceptionV3() if module is None else module, tuple(input_hw), in_channels)
    return {k: _torch_shape(s, kind) for k, (_, kind, s) in wanted.items()}


def _torch_shape(shape, kind):
    """The torch layout of a Flax shape: conv HWIO -> OIHW, dense [in, out] -> [out, in]."""
    if kind == "conv":
        return shape[3], shape[2], shape[0], shape[1]
    return shape[::-1] if kind == "dense" else shape


_WORDING = Wording(header="state dict does not match pytorch-fid's InceptionV3 ({count} problems):", limit=40,
                   missing="missing key: {name}", unexpected="unexpected key: {name}",
                   misshaped="shape mismatch: {name} has shape {got}, expected {want}", sort=("missing", "unexpected"))


def convert_state_dict(state_dict: Mapping[str, Any], module: nn.Module | None = None,
                       input_hw: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE), in_channels: int = 3) -> dict:
    """Convert a pytorch-fid / torchvision state dict (torch key -> array) into Flax variables for ``module``.

    ``state_dict`` maps torch names (``Mixed_5b.branch1x1.conv.weight``, ``...bn.running_var`` ...) to numpy
    arrays (or anything ``np.asarray`` accepts, e.g. CPU torch tensors). Conv weights OIHW become HWIO kernels;
    BN weight/bias/running_mean/running_var become scale/bias/mean/var; ``fc.weight`` becomes the ``fc`` kernel
    of a ``heads=True`` module. ``fc.bias``, ``*.num_batches_tracked`` (and ``fc.weight`` for the pool3 network)
    are ignored. Any missing key, unexpected key or shape mismatch raises one ValueError that lists them all.
    ``module``/``input_hw``/``in_channels`` let a single block be converted (tests); the default is the whole net.
    """
    wanted = _expected(InceptionV3() if module is None else module, tuple(input_hw), in_channels)
    provided = {k: state_dict[k] for k in state_dict
                if not (k.endswith(_IGNORED_SUFFIXES) or (k in _IGNORED_KEYS and k not in wanted))}
    check(provided, {k: _torch_shape(shape, kind) for k, (_, kind, shape) in wanted.items()}, _WORDING)
    out: dict = {}
    for key, (names, kind, _) in wanted.items():
        arr = np.asarray(state_dict[key], dtype=np.float32)
        if kind == "conv":
            arr = arr.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif kind == "dense":
            arr = arr.T
        node = out
        for n in names[:-1]:
            node = node.setdefault(n, {})
        node[names[-1]] = arr
    return out


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Read a converted state dict (``.safetensors`` or ``.npz``) from a local path or ``gs://`` (etils.epath)."""
    from etils import epath

    p = epath.Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"Inception weights not found at {path}. Provide pytorch-fid's {FID_WEIGHTS_FILE} converted with "
            f"`python -m amd_jax.tools.convert_inception --src={FID_WEIGHTS_FILE} --out=inception_fid.safetensors`.")
    name = p.name.lower()
    if name.endswith((".safetensors", ".npz")):
        return tensor_files.read(p)
    if name.endswith((".pth", ".pt", ".bin")):
        raise ValueError(f"{path} is a torch pickle; convert it first with "
                         f"`python -m amd_jax.tools.convert_inception --src={p.name} --out=inception_fid.safetensors`")
    raise ValueError(f"unsupported weight file {path}: expected .safetensors or .npz")


def load_inception(path, module: InceptionV3 | None = None) -> tuple[InceptionV3, dict]:
    """Load converted pytorch-fid weights from ``path`` (local or gs://) for ``module`` (default: the pool3
    network): returns (module, variables).

    Use ``module.apply(variables, images)`` with NHWC float images in [0, 1], or ``network.feature_fn``.
    """
    module = InceptionV3() if module is None else module
    variables = convert_state_dict(read_state_dict(path), module)
    return module, jax.tree_util.tree_map(jnp.asarray, variables)
