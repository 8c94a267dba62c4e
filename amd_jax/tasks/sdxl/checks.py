"""SDXL's own knobs by type and range (amd_jax/tasks/sdxl/__init__.py `check` calls `check_knobs` first, then its
checks of combinations and required inputs): `model.*`, `data.*`, `reward.*`, `gan.hidden` and the offline
evaluation's `eval.*`. `abstract` (the TPU plan) reads no file, so the input paths are then checked by type only."""

from __future__ import annotations

from amd_jax.config.checks import SEED_MAX, check_table, knob, need, need_input_path
from amd_jax.models.common.dtypes import DTYPES

# reward.name / eval.scorers: the text-to-image scorers of amd_jax/models/rewards/registry.py (the ImageNet
# classifiers there score class labels, not captions)
T2I_SCORERS = ("hpsv2", "pickscore", "clip_l14", "clip_g14")
_DTYPES = tuple(DTYPES)  # the names amd_jax/models/common/dtypes.py knows

_INTS = {
    "model.resolution": (32, "the image side in pixels (latents resolution / 8)"),
    "data.seed": (-1, SEED_MAX, "the seed of the caption order (numpy's default_rng([seed, step])); -1 = seed"),
    "gan.hidden": (1, "the GAN head's width"),
    "eval.grid_size": (1, "the samples drawn in the sample grid"),
    "eval.grid_cols": (1, "the sample grid's columns"),
    "eval.samples_per_prompt": (1, "the samples of each evaluation prompt (>= 2 adds 'diversity')"),
}
_CHOICES = {
    "model.variant": (("", "fp16"), "the weight files read: '' (full precision) or 'fp16' (*.fp16.safetensors)"),
    "model.teacher_dtype": (_DTYPES, "the frozen teacher's parameter dtype"),
    "model.compute_dtype": (_DTYPES, "the UNets' activation dtype"),
    "model.text_dtype": (_DTYPES, "the text encoders' activation dtype"),
    "reward.vae_dtype": (_DTYPES, "the VAE decoder's dtype in the reward (SDXL's VAE overflows in float16)"),
}
_FLAGS = ("model.exact_gelu", "model.unet_scan", "eval.save_images")
_STRINGS = {"data.field": "the caption field of a JSONL / parquet / TFDS caption file"}


def check_knobs(config, abstract: bool = False) -> None:
    """Every SDXL knob by type and range; with files (not `abstract`) every local input path must exist."""
    check_table(config, ints=_INTS, choices=_CHOICES, flags=_FLAGS, strings=_STRINGS)
    r = config.model.resolution
    need(r % 32 == 0,
         f"model.resolution={r}: a multiple of 32 (SDXL's UNet halves the latent of side resolution / 8 twice, so "
         "the latent side must divide by 4), e.g. 1024.")
    name = knob(config, "reward.name")
    need(name == "" or name in T2I_SCORERS,
         f"reward.name={name!r}: SDXL's reward scores an image against its caption; use one of {T2I_SCORERS} "
         "(--config.reward.name=hpsv2), or '' with method=dmd2 and reward.monitor=False.")
    scorers = knob(config, "eval.scorers")
    need(hasattr(scorers, "keys") and all(k in T2I_SCORERS for k in scorers),
         f"eval.scorers={scorers!r}: a dict {{scorer: weight folder}} with scorers among {T2I_SCORERS} ('' = not "
         "scored), e.g. --config.eval.scorers.pickscore=gs://B/models/pickscore.")
    inputs = {
        "model.path": ("the diffusers SDXL folder", not abstract),
        "reward.path": (f"the {name or 'reward'} weight folder", bool(name) and not abstract),
        "data.path": ("the caption file(s), or tfds:NAME", not abstract),
        "data.tfds_dir": ("the folder of the prepared TFDS captions", False),
        "data.embeddings": ("the precomputed prompt embeddings", False),
        "data.real": ("the GAN's per-caption real latents", False),
        "eval.prompts": ("the evaluation's caption file", False),
        "eval.inception": ("the converted pytorch-fid Inception weights", False),
        "eval.fid_ref": ("the FID reference statistics (.npz)", False),
        **{f"eval.scorers.{k}": (f"the {k} weight folder", False) for k in scorers},
    }
    for key, (what, required) in inputs.items():
        need_input_path(config, key, what, required=required, exists=not abstract, several=key == "data.path")
    e = config.eval
    need(bool(e.inception) == bool(e.fid_ref),
         f"eval.inception={e.inception!r}, eval.fid_ref={e.fid_ref!r}: FID needs both the converted pytorch-fid "
         "Inception weights and the reference mu/sigma .npz; set both or neither.")
