"""SiT / ImageNet's own knobs by type and range (amd_jax/tasks/imagenet/__init__.py `check` calls `check_knobs`
first, then its checks of combinations and required inputs): the SiT architecture (`model.arch.*`, checked as
amd_jax/models/sit/network.py's SiTConfig would, but naming the config key), `model.*`, `data.*`, `reward.*`,
`gan.hidden` and `eval.*`. `abstract` (the TPU plan) reads no file: the input paths are then checked by type only."""

from __future__ import annotations

from amd_jax.config.checks import SEED_MAX, check_table, knob, need, need_input_path

CLASSIFIERS = ("imagenet_vit", "imagenet_resnet")  # amd_jax/models/rewards/registry.py: log p(class | image)
ATTENTION = ("", "xla", "cudnn")  # '' = jax's choice (amd_jax/models/sit/network.py ATTENTION_IMPLS)

_INTS = {
    "model.arch.input_size": (1, "the latent side (32 for 256 px images through the SD-VAE)"),
    "model.arch.patch_size": (1, "the SiT's patch side (it divides input_size)"),
    "model.arch.in_channels": (1, "the latent channels (4 for the SD-VAE)"),
    "model.arch.hidden_size": (4, "the SiT's width (a multiple of 4 and of num_heads)"),
    "model.arch.depth": (1, "the SiT's blocks"),
    "model.arch.num_heads": (1, "the SiT's attention heads"),
    "model.arch.num_classes": (1, "the class labels (1000 for ImageNet)"),
    "data.seed": (-1, SEED_MAX, "the seed of the class labels drawn per step; -1 = seed"),
    "gan.hidden": (1, "the GAN head's width"),
    "eval.batch_size": (1, "the VAE-decode / Inception batch of the evaluation"),
    "eval.grid_size": (1, "the samples drawn in the sample grid"),
    "eval.grid_cols": (1, "the sample grid's columns"),
}
_FLOATS = (
    ("model.arch.mlp_ratio", lambda v: 0 < v <= 64, "a value in (0, 64], e.g. 4.0",
     "the MLP's hidden width over hidden_size"),
    ("model.arch.class_dropout_prob", lambda v: 0 < v < 1, "a value in (0, 1), e.g. 0.1 (the checkpoint's)",
     "the teacher's label dropout: > 0 gives the label table the null class CFG's unconditional branch uses, 1 "
     "would never have trained the conditional one"),
)
_CHOICES = {"model.attention_impl": (ATTENTION, "jax.nn.dot_product_attention's implementation ('' = jax picks)")}
_FLAGS = ("model.arch.learn_sigma",)


def check_knobs(config, abstract: bool = False) -> None:
    """Every SiT / ImageNet knob by type and range; with files (not `abstract`) every local input path must exist."""
    check_table(config, ints=_INTS, floats=_FLOATS, choices=_CHOICES, flags=_FLAGS)
    a = config.model.arch
    need(a.hidden_size % 4 == 0 and a.hidden_size % a.num_heads == 0,
         f"model.arch.hidden_size={a.hidden_size}: a multiple of 4 (the 2-D sin-cos position embedding) and of "
         f"model.arch.num_heads={a.num_heads}.")
    need(a.input_size % a.patch_size == 0,
         f"model.arch.patch_size={a.patch_size}: it must divide model.arch.input_size={a.input_size}.")
    name = knob(config, "reward.name")
    need(name == "" or name in CLASSIFIERS,
         f"reward.name={name!r}: the reward is an ImageNet classifier's log p(class | image); use one of "
         f"{CLASSIFIERS} (--config.reward.name=imagenet_vit), or '' with method=dmd2 and reward.monitor=False.")
    e = config.eval
    need(bool(e.reference) == bool(e.inception),
         f"eval.reference={e.reference!r}, eval.inception={e.inception!r}: ADM's reference batch .npz and the "
         "converted pytorch-fid Inception weights go together; set both or neither.")
    inputs = {
        "model.path": ("the converted SiT folder (python -m amd_jax.tools.convert_sit)", not abstract),
        "model.vae_path": ("the SD-VAE (diffusers AutoencoderKL) folder", False),
        "reward.path": (f"the {name or 'reward'} classifier folder", False),
        "data.real": ("the GAN's real latents and labels", False),
        "eval.reference": ("ADM's reference batch .npz", False),
        "eval.inception": ("the converted pytorch-fid Inception weights", False),
    }
    for key, (what, required) in inputs.items():
        need_input_path(config, key, what, required=required, exists=not abstract)
