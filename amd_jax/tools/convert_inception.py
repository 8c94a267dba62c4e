"""Convert pytorch-fid's Inception weights (.pth, torch pickle) into a torch-free .safetensors or .npz file.

    python -m amd_jax.tools.convert_inception --src=pt_inception-2015-12-05-6726825d.pth \\
        --out=inception_fid.safetensors

The input is pytorch-fid's FID_WEIGHTS_URL file
(https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth).
Only this conversion needs torch (besides numpy, absl-py and ml_collections for the flags); keys stay torch's names
(``Mixed_5b.branch1x1.conv.weight`` ...), values are float32 numpy arrays (``num_batches_tracked`` counters
dropped). If jax/flax are importable the result is checked against the Flax InceptionV3 (``convert_state_dict``)
before it is written, so a wrong file fails here with the offending keys; otherwise the same check runs when it is
loaded. Load it with ``amd_jax.models.inception.weights.load_inception(path)`` (local or gs://).
"""

from __future__ import annotations

import numpy as np
from absl import flags

from amd_jax import cli, paths
from amd_jax.models.common.torch_weights import torch_to_numpy

_SRC = flags.DEFINE_string("src", None, "pytorch-fid's pt_inception-2015-12-05-6726825d.pth.")
_OUT = flags.DEFINE_string("out", None, "The file to write: .safetensors or .npz.")
flags.mark_flags_as_required(["src", "out"])


def main(argv):
    del argv
    src, out = paths.absolute(_SRC.value), paths.absolute(_OUT.value)
    if not out.endswith((".safetensors", ".npz")):
        raise SystemExit(f"--out must end in .safetensors or .npz, got {out}")
    sd = torch_to_numpy(src)
    try:
        from amd_jax.models.inception.weights import convert_state_dict
    except ImportError:  # a torch-only environment: the check runs again in load_inception
        print("jax/flax not importable: skipping the key/shape check")
    else:
        convert_state_dict(sd)  # raises ValueError naming missing/unexpected keys or shape mismatches
    if out.endswith(".safetensors"):
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, out)
    else:
        np.savez(out, **sd)
    print(f"wrote {len(sd)} tensors to {out}")


if __name__ == "__main__":
    cli.run(main)
