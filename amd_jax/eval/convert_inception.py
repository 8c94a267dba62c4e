"""Convert pytorch-fid's Inception weights (.pth, torch pickle) into a torch-free .safetensors or .npz file.

    python -m amd_jax.eval.convert_inception pt_inception-2015-12-05-6726825d.pth inception_fid.safetensors

The input is pytorch-fid's FID_WEIGHTS_URL file
(https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth).
Only this conversion needs torch; keys stay torch's names (``Mixed_5b.branch1x1.conv.weight`` ...), values are
float32 numpy arrays (``num_batches_tracked`` counters dropped). If jax/flax are importable the result is checked
against the Flax InceptionV3 (``convert_state_dict``) before it is written, so a wrong file fails here with the
offending keys; otherwise the same check runs when it is loaded.
Load it with ``amd_jax.eval.inception.load_inception(path)`` (local or gs://).
"""

from __future__ import annotations

import argparse

import numpy as np


def torch_to_numpy(path: str) -> dict[str, np.ndarray]:
    """Load a torch state dict (.pth) and return {key: float32 ndarray}, dropping BN step counters."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SystemExit("converting a .pth needs torch (pip install torch); loading the result does not") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and not any(k.endswith(".weight") for k in sd):
        sd = sd["state_dict"]
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in sd.items()
            if not k.endswith("num_batches_tracked")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="pytorch-fid pt_inception-2015-12-05-6726825d.pth")
    ap.add_argument("dst", help="output .safetensors or .npz")
    args = ap.parse_args(argv)
    sd = torch_to_numpy(args.src)
    try:
        from amd_jax.eval.inception import convert_state_dict
    except ImportError:  # a torch-only environment: the check runs again in load_inception
        print("jax/flax not importable: skipping the key/shape check")
    else:
        convert_state_dict(sd)  # raises ValueError naming missing/unexpected keys or shape mismatches
    if args.dst.endswith(".safetensors"):
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, args.dst)
    elif args.dst.endswith(".npz"):
        np.savez(args.dst, **sd)
    else:
        raise SystemExit(f"output must end in .safetensors or .npz, got {args.dst}")
    print(f"wrote {len(sd)} tensors to {args.dst}")


if __name__ == "__main__":
    main()
