"""Convert a PyTorch SiT / DiT checkpoint into a torch-free folder that `amd_jax.models.sit.weights.load_sit` reads.

    python -m amd_jax.tools.convert_sit --src=SiT-XL-2-256x256.pt --out=DIR [--size=XL/2 | --num_heads=16]

--src: SiT's released checkpoint or a SiT/DiT train.py checkpoint (torch pickle, loaded with weights_only=True; a
bare state dict or train.py's {'model', 'ema', 'opt', 'args'}, EMA preferred; its `args`, an argparse.Namespace,
is the one class allowed beyond tensors and containers, a pickle with any other is refused), diffusers'
DiTTransformer2DModel weights, or a .safetensors file of either naming. --size names the preset (S/p, B/p, L/p, XL/p); the number of heads is the one
thing a checkpoint's shapes do not show, so a custom model gives --num_heads instead. Everything else (input
size, channels, classes, learn_sigma, depth, width) is read from the tensor shapes; diffusers weights lack the
position table, so they also need --input_size (their config's sample_size).

Writes DIR/model.safetensors (SiT's original tensor names and PyTorch layouts, float32, pos_embed included) and
DIR/config.json (SiT's architecture arguments). Every expected key, every shape and the pos_embed (against SiT's
fixed sin-cos table) are checked BEFORE anything is written: a wrong or incomplete checkpoint exits non-zero with
the missing / unexpected / mis-shaped tensors named, and DIR is left untouched. Only reading a torch pickle needs
torch.
"""

from __future__ import annotations

import sys

from absl import flags
from etils import epath

from amd_jax import caches, cli, paths, tensor_files
from amd_jax.errors import ConfigError, DamagedFileError
from amd_jax.models.sit.network import SiTConfig, size_config
from amd_jax.models.sit.weights import CONFIG_FILE, WEIGHTS_FILE, checkpoint_state, config_json, convert

_SRC = flags.DEFINE_string("src", None, "The local PyTorch SiT/DiT checkpoint (.pt/.pth/.bin or .safetensors).")
_OUT = flags.DEFINE_string("out", None, "The folder to write (local or gs://).")
_SIZE = flags.DEFINE_string("size", None, "SiT preset of the checkpoint: S/p, B/p, L/p or XL/p (e.g. XL/2).")
_HEADS = flags.DEFINE_integer("num_heads", None, "Attention heads, for a checkpoint that is not a preset.")
_INPUT = flags.DEFINE_integer("input_size", None, "Latent side (32 for 256x256): needed for diffusers weights only.")
flags.mark_flags_as_required(["src", "out"])


def num_heads(size: str | None, heads: int | None) -> int:
    """The head count from --size or --num_heads (exactly one of them, or both agreeing)."""
    if size is None and heads is None:
        raise ConfigError("Give --size (S/2, B/2, L/2, XL/2, any patch size) or, for a custom model, --num_heads.")
    preset = size_config(size)["num_heads"] if size is not None else heads
    if heads is not None and heads != preset:
        raise ConfigError(f"--num_heads={heads} contradicts --size={size} ({preset} heads): drop one of them.")
    return preset


def convert_file(src: str, out: str, size: str | None = None, heads: int | None = None,
                 input_size: int | None = None) -> SiTConfig:
    """Read, convert and check `src`, then write `out`/{model.safetensors, config.json}; nothing is written when
    a check fails (ConfigError / DamagedFileError)."""
    heads = num_heads(size, heads)
    if paths.is_url(src) or not epath.Path(src).is_file():
        raise ConfigError(f"--src={src} is not a local file: give the checkpoint's local path (copy it from a bucket "
                          "first).")
    state, cfg = convert(checkpoint_state(src), heads, what=src, size=size, input_size=input_size)
    folder = epath.Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    tensor_files.write(folder / WEIGHTS_FILE, state, metadata={"format": "pt"})
    caches.atomic_write_bytes(folder / CONFIG_FILE, config_json(cfg).encode())
    return cfg


def main(argv):
    del argv
    src, out = paths.absolute(_SRC.value), paths.absolute(_OUT.value)
    try:
        cfg = convert_file(src, out, _SIZE.value, _HEADS.value, _INPUT.value)
    except (ConfigError, DamagedFileError) as e:
        sys.exit(f"Conversion refused: {e}\nNothing was written to {out}.")
    print(f"wrote {out}/{WEIGHTS_FILE} and {CONFIG_FILE}: " + ", ".join(f"{k}={v}" for k, v in cfg.arch().items()))


if __name__ == "__main__":
    cli.run(main)
