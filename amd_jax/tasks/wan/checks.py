"""Wan's config checks, each one line before anything loads (amd_jax/tasks/wan/__init__.py `check` calls them):
every knob by type and range (`check_knobs`), the video geometry (`latent_shape`: frames 4k+1, height and width
multiples of 16), the model folder (`check_model_folder`: the transformer / VAE / umT5 config.json files read and
refused by the loaders' own config checks when they describe another model, before any tensor is read), and the
context axis against the tokens and heads (`check_context`: parallel/context.py's SequenceParallel.check on the
config's mesh, abstract)."""

from __future__ import annotations

import json
import math
import os

import jax

from amd_jax.config.checks import SEED_MAX, check_table, knob, need, need_input_path
from amd_jax.errors import ConfigError
from amd_jax.models.common.attention import KERNELS
from amd_jax.models.common.dtypes import DTYPES
from amd_jax.models.wan.transformer import REMAT_POLICIES
from amd_jax.parallel.context import METHODS

T2I_SCORERS = ("hpsv2", "pickscore", "clip_l14", "clip_g14")  # scored per frame (models/rewards/video.py)
TEMPORAL, SPATIAL = 4, 8  # the Wan2.1 VAE's compression (its config is checked against these)
CONTEXT_AXIS = "context"  # the mesh axis parallel/sharding.py's ACTIVATION_RULES split the tokens over
_DTYPES = tuple(DTYPES)

_INTS = {
    "model.frames": (1, "the video's frames (4k + 1: the VAE keeps frame 0 and compresses each 4 after it)"),
    "model.height": (16, "the video's height in pixels (a multiple of 16)"),
    "model.width": (16, "the video's width in pixels (a multiple of 16)"),
    "model.text_len": (1, "the umT5 tokens per prompt (Wan pads to 512)"),
    "data.seed": (-1, SEED_MAX, "the seed of the caption order; -1 = seed"),
    "reward.frames": (1, "the decoded frames each video's reward scores (evenly spaced, first and last included)"),
    "reward.latent_frames": (0, "the latent frames the reward decodes: 0 = all, k = the first k (video frames "
                                "0 .. 4k - 4, exact: the VAE is causal)"),
    "gan.hidden": (1, "the GAN head's width"),
    "eval.grid_size": (1, "the videos shown as frame strips"),
    "eval.frames": (1, "the frames of each frame strip"),
    "eval.samples_per_prompt": (1, "the samples of each evaluation prompt, in a row"),
}
_FLOATS = (("reward.temporal_weight", lambda v: v >= 0, ">= 0", "the weight of the temporal-smoothness term"),)
_CHOICES = {
    "model.teacher_dtype": (_DTYPES, "the frozen teacher's parameter dtype"),
    "model.compute_dtype": (_DTYPES, "the transformers' activation dtype"),
    "model.text_dtype": (_DTYPES, "the umT5 encoder's activation dtype"),
    "model.remat": (REMAT_POLICIES, "what each transformer block recomputes in the backward pass"),
    "model.attention": (KERNELS, "the per-device attention kernel"),
    "model.sequence_method": (METHODS, "self-attention over the context axis (parallel/context.py)"),
    "reward.vae_dtype": (_DTYPES, "the VAE decoder's dtype in the reward"),
}
_STRINGS = {"data.field": "the caption field of a JSONL / parquet caption file",
            "model.negative_prompt": "the negative prompt of the teacher's CFG (diffusers' WanPipeline: '')"}


def check_knobs(config, abstract: bool = False) -> None:
    """Every Wan knob by type and range; with files (not `abstract`) every local input path must exist."""
    check_table(config, ints=_INTS, floats=_FLOATS, choices=_CHOICES, flags=("eval.save_images",), strings=_STRINGS)
    frames = latent_shape(config, 16)[0]
    lf = config.reward.latent_frames
    need(lf <= frames, f"reward.latent_frames={lf}: at most the video's {frames} latent frames "
                       f"(model.frames={config.model.frames}); 0 decodes them all.")
    name = knob(config, "reward.name")
    need(name == "" or name in T2I_SCORERS,
         f"reward.name={name!r}: Wan's reward scores decoded frames against the caption; use one of {T2I_SCORERS} "
         "(--config.reward.name=hpsv2), or '' with method=dmd2 and reward.monitor=False.")
    inputs = {
        "model.path": ("the diffusers Wan2.1 folder (transformer/, vae/, text_encoder/, tokenizer/)", not abstract),
        "reward.path": (f"the {name or 'reward'} weight folder", bool(name) and not abstract),
        "data.path": ("the caption file(s), or a folder of caption records", not abstract),
        "data.embeddings": ("the precomputed umT5 prompt embeddings", False),
        "data.real": ("the GAN's per-caption real latents", False),
        "eval.prompts": ("the evaluation's caption file", False),
    }
    for key, (what, required) in inputs.items():
        need_input_path(config, key, what, required=required, exists=not abstract, several=key == "data.path")


def latent_shape(config, channels: int) -> tuple[int, int, int, int]:
    """(F, H, W, C) of one sample's channels-last latents: frames (4k + 1) -> k + 1 latent frames, height and width
    / 8; one ConfigError line for a frame count that is not 4k + 1 or a side that is not a multiple of 16 (the VAE's
    8 times the transformer's 2 x 2 patches)."""
    m = config.model
    need((m.frames - 1) % TEMPORAL == 0,
         f"model.frames={m.frames}: Wan's VAE needs 4k + 1 frames (it keeps frame 0 and compresses each 4 after it), "
         f"e.g. {TEMPORAL * max((m.frames - 1) // TEMPORAL, 0) + 1} or 81.")
    for key in ("height", "width"):
        v = m[key]
        need(v % (2 * SPATIAL) == 0,
             f"model.{key}={v}: a multiple of 16 (the VAE's 8x spatial compression times the transformer's 2x2 "
             f"patches), e.g. {max(v // 16, 1) * 16}.")
    return (1 + (m.frames - 1) // TEMPORAL, m.height // SPATIAL, m.width // SPATIAL, int(channels))


def _read_json(path: str) -> dict:
    try:
        return json.loads(open(path).read())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read it ({e.__class__.__name__}: {e}); model.path must be a diffusers "
                          "Wan2.1 folder (transformer/, vae/, text_encoder/, tokenizer/).") from None


def check_model_folder(config, need_text: bool) -> None:
    """A local model.path must be Wan2.1 text-to-video: its transformer/, vae/ and (when prompts are encoded)
    text_encoder/ config.json files go through the loaders' own config checks (another class, image-to-video,
    other latent channels: one line), and tokenizer/ must exist; no tensor is read. gs:// folders are checked
    when loaded."""
    from amd_jax.models.umt5.weights import config_from_hf
    from amd_jax.models.wan.transformer import WanConfig
    from amd_jax.models.wan.vae import WanVAEConfig

    path = config.model.path
    if "://" in path:
        return
    parts = {"transformer": "transformer", "vae": "vae"}
    if need_text:
        parts["text_encoder"] = "text_encoder"
    for part in parts:
        f = os.path.join(path, part, "config.json")
        need(os.path.isfile(f), f"model.path={path!r} has no {part}/config.json: give the diffusers Wan2.1 folder "
                                "(e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers) with transformer/, vae/, text_encoder/, "
                                "tokenizer/.")
    tcfg = WanConfig.from_diffusers(_read_json(os.path.join(path, "transformer", "config.json")),
                                    what=f"{path}/transformer/config.json")
    vcfg = WanVAEConfig.from_diffusers(_read_json(os.path.join(path, "vae", "config.json")),
                                       what=f"{path}/vae/config.json")
    need(tcfg.in_channels == vcfg.z_dim == tcfg.out_channels,
         f"model.path={path!r}: the transformer's {tcfg.in_channels} latent channels and the VAE's z_dim "
         f"{vcfg.z_dim} differ: the folders come from different models.")
    need((vcfg.temporal_factor, vcfg.spatial_factor) == (TEMPORAL, SPATIAL),
         f"model.path={path!r}: the VAE compresses {vcfg.temporal_factor}x in time and {vcfg.spatial_factor}x in "
         f"space; Wan2.1's compresses {TEMPORAL}x and {SPATIAL}x.")
    if need_text:
        from amd_jax.models.common.hf_folders import WeightError

        try:
            ucfg = config_from_hf(_read_json(os.path.join(path, "text_encoder", "config.json")),
                                  f"{path}/text_encoder/config.json")
        except WeightError as e:
            raise ConfigError(str(e)) from None
        need(ucfg.d_model == tcfg.text_dim,
             f"model.path={path!r}: the text encoder's width {ucfg.d_model} is not the transformer's text_dim "
             f"{tcfg.text_dim}: the folders come from different models.")
        need(os.path.isdir(os.path.join(path, "tokenizer")),
             f"model.path={path!r} has no tokenizer/ folder: the umT5 tokenizer files of the Wan2.1 diffusers folder "
             "(or precompute the prompt embeddings: data.embeddings).")


def check_context(config, tokens: int, heads: int, num_devices: int | None = None) -> None:
    """The config's mesh (abstract, over `num_devices`, default this job's) can split `tokens` and `heads` over its
    context axis and the global batch over its batch axes: SequenceParallel.check, one ConfigError line."""
    from amd_jax.parallel import mesh as mesh_lib
    from amd_jax.parallel.context import SequenceParallel
    from amd_jax.parallel.sharding import activation_rules

    c = config
    if CONTEXT_AXIS not in c.mesh.axes:
        return
    mesh = mesh_lib.make_mesh(c.mesh.axes, c.mesh.shape, num_devices or jax.device_count())
    need(CONTEXT_AXIS not in c.mesh.batch_axes,
         f"mesh.batch_axes={tuple(c.mesh.batch_axes)} names {CONTEXT_AXIS!r}: the context axis splits each "
         "sample's tokens, not the batch; leave it out, e.g. ('data', 'fsdp').")
    seq = SequenceParallel(mesh, c.model.sequence_method, activation_rules(c.mesh.batch_axes))
    seq.check(int(c.global_batch), tokens, heads)


def tokens_of(shape: tuple[int, int, int, int], patch) -> int:
    """The transformer's token count of latents (F, H, W, C) with `patch` (pt, ph, pw)."""
    return math.prod(n // p for n, p in zip(shape[:3], patch))
