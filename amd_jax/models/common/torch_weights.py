"""PyTorch state-dict pickles (.pth / .pt / .bin) -> float32 numpy, for the one-off weight converters.

The converters (amd_jax.tools.convert_inception, amd_jax.tools.convert_openclip) are the only code that
reads a torch pickle, and this is the only module that imports torch: everything else reads the .safetensors /
.npz files they write. Needs only numpy and torch, so it also runs where jax is not installed.
"""

from __future__ import annotations

import numpy as np


def torch_to_numpy(path: str, containers: tuple[str, ...] = ("state_dict",)) -> dict[str, np.ndarray]:
    """Load a torch state dict (.pth) and return {key: float32 ndarray}, dropping BN step counters.

    A checkpoint that wraps its state dict (no '*.weight' key at the top level) is unwrapped under the first of
    `containers` it holds (e.g. ('ema', 'model') for SiT/DiT training checkpoints)."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SystemExit("converting a .pth needs torch (pip install torch); loading the result does not") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and not any(k.endswith(".weight") for k in sd):
        sd = next((sd[c] for c in containers if c in sd), sd)
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in sd.items()
            if not k.endswith("num_batches_tracked")}
