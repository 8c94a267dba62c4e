"""Turn an open_clip PyTorch checkpoint (HPSv2's ``HPS_v2_compressed.pt``, an open_clip ViT-g-14 ``.bin``) into the
torch-free folder that ``load_reward('hpsv2' | 'clip_g14', folder)`` reads:

    python -m amd_jax.tools.convert_openclip --src=HPS_v2_compressed.pt --out=OUT_DIR --arch=ViT-H-14 \\
        --tokenizer=DIR_WITH_vocab.json_AND_merges.txt

writes OUT_DIR/open_clip_model.safetensors (float32, open_clip tensor names, a DDP ``module.`` prefix removed),
OUT_DIR/open_clip_config.json ({"model_cfg": the arch's open_clip config}) and copies the tokenizer files. Only
reading the .pt needs torch. Before anything is written the tensors are checked against the architecture
(missing / unexpected keys, shapes), so a wrong checkpoint or --arch fails here, naming the tensors.
The work is done by amd_jax.models.rewards.openclip_weights (``write_folder``); this module is its command line.
"""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")  # before transformers is imported: it must not load TensorFlow

from absl import flags  # noqa: E402

from amd_jax import cli, paths  # noqa: E402
from amd_jax.models.rewards import openclip_weights as oc  # noqa: E402
from amd_jax.models.common.torch_weights import torch_to_numpy  # noqa: E402

_SRC = flags.DEFINE_string("src", None, "open_clip checkpoint (.pt/.bin, a state dict or {'state_dict': ...}).")
_OUT = flags.DEFINE_string("out", None, "The folder to write (created if missing).")
_ARCH = flags.DEFINE_enum("arch", None, list(oc.OPENCLIP_CONFIGS), "ViT-H-14 (HPSv2, PickScore's tower) or ViT-g-14.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Folder holding vocab.json + merges.txt (or tokenizer.json).")
flags.mark_flags_as_required(["src", "out", "arch"])


def main(argv):
    del argv
    tokenizer = paths.absolute(_TOKENIZER.value) or None
    state = torch_to_numpy(paths.absolute(_SRC.value))
    out = oc.write_folder(state, paths.absolute(_OUT.value), oc.OPENCLIP_CONFIGS[_ARCH.value], tokenizer)
    print(f"wrote {out}")
    if not any((out / name).exists() for name in oc.TOKENIZER_FILES):
        print(f"no tokenizer copied: put vocab.json + merges.txt (or tokenizer.json) into {out} before loading it")


if __name__ == "__main__":
    cli.run(main)
