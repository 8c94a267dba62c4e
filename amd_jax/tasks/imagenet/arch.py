"""The published architectures the imagenet task's reward uses, for planning configs/sit_xl2.py without its weights
(amd_jax/plan: model.vae_path and reward.path empty): stabilityai/sd-vae-ft-ema's vae config.json and the
transformers defaults of google/vit-base-patch16-224 (ViTConfig() with 1000 labels, ViTImageProcessor's defaults);
and the task's abstract frozen parameters and batch. With a folder set, its config files (never its weights) give
the architecture instead, as the real loaders would."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from etils import epath

from amd_jax.models.rewards import imagenet_classifier as ic
from amd_jax.models.rewards import weights as rw
from amd_jax.models.common import hf_folders
from amd_jax.models.vae import weights as vae_weights
from amd_jax.models.common.params import cast_params

# stabilityai/sd-vae-ft-ema vae config.json (diffusers 0.4.2: no scaling_factor key, so the default 0.18215); the
# same architecture as SDXL's VAE (tasks/sdxl/arch.py), which differs in scaling_factor 0.13025 and sample_size.
SD_VAE_FT_EMA = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 256, "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# reward.name -> (classifier arch, config.json, preprocessor_config.json) when reward.path is empty:
# google/vit-base-patch16-224 (ViTConfig defaults: 224 px, patch 16, 12 x 768) and microsoft/resnet-50.
CLASSIFIERS = {
    "imagenet_vit": ("vit", {"model_type": "vit", "num_labels": 1000},
                     {"do_resize": True, "do_rescale": True, "do_normalize": True, "resample": 2,
                      "rescale_factor": 1 / 255, "size": {"height": 224, "width": 224},
                      "image_mean": [0.5] * 3, "image_std": [0.5] * 3}),
    "imagenet_resnet": ("resnet", {"model_type": "resnet", "num_labels": 1000},
                        {"do_resize": True, "do_rescale": True, "do_normalize": True, "resample": 3,
                         "rescale_factor": 1 / 255, "size": {"shortest_edge": 224}, "crop_pct": 0.875,
                         "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}),
}


def vae_module(vae_path: str):
    """The FlaxAutoencoderKL (float32) of `vae_path`'s config.json (its vae/ subfolder, or the folder itself), or
    sd-vae-ft-ema's without a path."""
    if not vae_path:
        return vae_weights.vae_from_config(SD_VAE_FT_EMA, jnp.float32)
    sub = "vae" if (epath.Path(vae_path) / "vae" / "config.json").exists() else ""
    return vae_weights.vae_from_config(hf_folders.read_config(epath.Path(vae_path), sub), jnp.float32)


def classifier(name: str, path: str = "") -> ic.ImageClassifier:
    """The reward classifier `name` with abstract params (ShapeDtypeStructs): its architecture from `path`'s
    config files, or the published one without a path."""
    if name not in CLASSIFIERS:
        raise KeyError(f"unknown ImageNet reward {name!r}; known: {sorted(CLASSIFIERS)}")
    arch, meta, proc = CLASSIFIERS[name]
    if path:
        meta, proc = (rw.read_json(rw.as_path(path) / f) for f in ("config.json", "preprocessor_config.json"))
    config = ic.ARCHS[arch][0].from_dict(meta)
    pre = ic.vit_preprocess_config(proc, config.image_size) if arch == "vit" else ic.convnext_preprocess_config(proc)
    return ic.ImageClassifier(name, arch, config, ic.abstract_variables(arch, config, pre.image_size), pre)


def abstract_frozen(init_denoiser, teacher_dtype, vae=None, scorer: ic.ImageClassifier | None = None) -> dict:
    """{'teacher': the SiT's params in teacher_dtype, 'reward': {'vae', 'classifier'} float32 | None} as
    ShapeDtypeStructs: what the task's teacher() and reward() would load, by shape."""
    teacher = jax.eval_shape(lambda: cast_params(init_denoiser(jax.random.PRNGKey(0)), teacher_dtype))
    if scorer is None:
        return {"teacher": teacher, "reward": None}
    f32 = lambda t: jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.float32), t)
    return {"teacher": teacher, "reward": {"vae": f32(hf_folders.abstract_params(vae)),
                                           "classifier": f32(scorer.params)}}


def abstract_batch(sample_shape, real: bool, bsz: int) -> dict:
    """A global batch of `bsz` rows as ShapeDtypeStructs, as amd_jax/data/latents.py's LatentLabels gives it:
    {'cond': {'label': int32 [B]}, 'real': float32 latents [B, H, W, C] (with real latents) or zeros [B, 1]}."""
    s = jax.ShapeDtypeStruct
    return {"cond": {"label": s((bsz,), jnp.int32)},
            "real": s((bsz,) + (tuple(sample_shape) if real else (1,)), jnp.float32)}
