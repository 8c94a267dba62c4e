"""Turn the LAION aesthetic predictor VBench uses (``sa_0_4_vit_l_14_linear.pth``: the state dict of a
``torch.nn.Linear(768, 1)`` on normalised CLIP ViT-L/14 image embeddings) into the torch-free .npz that
``python -m amd_jax.tools.vbench --aesthetic=FILE`` reads:

    python -m amd_jax.tools.convert_aesthetic --src=sa_0_4_vit_l_14_linear.pth --out=laion_aesthetic.npz

Only reading the .pth needs torch (amd_jax.models.common.torch_weights). The tensors are checked (exactly 'weight'
(1, 768) and 'bias' (1,)) before anything is written.
"""

from __future__ import annotations

import sys

from absl import flags

from amd_jax import cli, paths, tensor_files
from amd_jax.models.common.torch_weights import torch_to_numpy

_SRC = flags.DEFINE_string("src", None, "sa_0_4_vit_l_14_linear.pth (a state dict of nn.Linear(768, 1)).")
_OUT = flags.DEFINE_string("out", None, "The .npz to write.")
flags.mark_flags_as_required(["src", "out"])


def main(argv):
    del argv
    state = torch_to_numpy(paths.absolute(_SRC.value))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != {"weight": (1, 768), "bias": (1,)}:
        sys.exit(f"Conversion refused: {_SRC.value} holds {shapes}, not the LAION aesthetic head (weight (1, 768), "
                 f"bias (1,)); give sa_0_4_vit_l_14_linear.pth.")
    out = paths.absolute(_OUT.value)
    tensor_files.write(out, state)
    print(f"wrote {out}: use --aesthetic={out}")


if __name__ == "__main__":
    cli.run(main)
