"""Turn an open_clip PyTorch checkpoint (HPSv2's ``HPS_v2_compressed.pt``, an open_clip ViT-g-14 ``.bin``) into the
torch-free folder that ``load_reward('hpsv2' | 'clip_g14', folder)`` reads:

    python -m amd_jax.models.rewards.convert_openclip HPS_v2_compressed.pt OUT_DIR --arch ViT-H-14 \\
        --tokenizer DIR_WITH_vocab.json_AND_merges.txt

writes OUT_DIR/open_clip_model.safetensors (float32, open_clip tensor names, a DDP ``module.`` prefix removed),
OUT_DIR/open_clip_config.json ({"model_cfg": the arch's open_clip config}) and copies the tokenizer files. Only
reading the .pt needs torch. Before anything is written the tensors are checked against the architecture
(missing / unexpected keys, shapes), so a wrong checkpoint or --arch fails here, naming the tensors.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("USE_TF", "0")  # before transformers is imported: it must not load TensorFlow

import numpy as np  # noqa: E402
from etils import epath  # noqa: E402

from amd_jax.models.rewards import openclip_weights as oc  # noqa: E402

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json")


def write_folder(state: dict[str, np.ndarray], out_dir, model_cfg: dict, tokenizer_dir=None,
                 preprocess_cfg: dict | None = None) -> epath.Path:
    """Check `state` (open_clip names, numpy) against open_clip's `model_cfg` and write the folder.
    `preprocess_cfg` (open_clip's mean/std...) is stored when given; without it the loader uses OpenAI's
    mean/std, which is what ViT-H-14 (HPSv2) and ViT-g-14 use."""
    from safetensors.numpy import save as save_bytes

    state = {k: np.array(v, np.float32, order="C") for k, v in oc.strip_prefix(state).items()}  # keeps 0-d
    oc.check_openclip_state_dict(state, oc.clip_config_from_openclip(model_cfg))  # before writing anything
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "open_clip_model.safetensors").write_bytes(save_bytes(state))
    meta = {"model_cfg": model_cfg, **({"preprocess_cfg": preprocess_cfg} if preprocess_cfg else {})}
    (out / "open_clip_config.json").write_text(json.dumps(meta, indent=1))
    if tokenizer_dir:
        src = epath.Path(tokenizer_dir)
        for name in TOKENIZER_FILES:
            if (src / name).exists():
                (out / name).write_bytes((src / name).read_bytes())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="open_clip checkpoint (.pt/.bin, a state dict or {'state_dict': ...})")
    ap.add_argument("out_dir")
    ap.add_argument("--arch", required=True, help="ViT-H-14 (HPSv2, PickScore's tower) or ViT-g-14")
    ap.add_argument("--tokenizer", default="", help="folder holding vocab.json + merges.txt (or tokenizer.json)")
    args = ap.parse_args(argv)
    if args.arch not in oc.OPENCLIP_CONFIGS:
        raise SystemExit(f"--arch={args.arch!r}: use one of {sorted(oc.OPENCLIP_CONFIGS)}.")
    from amd_jax.eval.convert_inception import torch_to_numpy

    out = write_folder(torch_to_numpy(args.src), args.out_dir, oc.OPENCLIP_CONFIGS[args.arch], args.tokenizer or None)
    print(f"wrote {out}")
    if not any((out / name).exists() for name in TOKENIZER_FILES):
        print(f"no tokenizer copied: put vocab.json + merges.txt (or tokenizer.json) into {out} before loading it")


if __name__ == "__main__":
    main()
