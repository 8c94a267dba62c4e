"""open_clip ViT CLIP -> transformers FlaxCLIPModel: the config, the (pure, eval_shape-able) weight converter and
the torch-free folder the converter CLI (convert_openclip.py) writes.

open_clip's ``CLIP`` (ViT-H-14, ViT-g-14, HPSv2) and transformers' CLIP are the same network up to naming:

==============================================  ==================================================================
open_clip                                       FlaxCLIPModel params
==============================================  ==================================================================
visual.conv1.weight [W,3,p,p]                   vision_model/embeddings/patch_embedding/kernel [p,p,3,W]
visual.class_embedding [W]                      vision_model/embeddings/class_embedding
visual.positional_embedding [N+1,W]             vision_model/embeddings/position_embedding/embedding
visual.ln_pre / visual.ln_post                  vision_model/pre_layrnorm / post_layernorm (scale, bias)
*.transformer.resblocks.i.ln_1 / ln_2           */encoder/layers/i/layer_norm1 / layer_norm2
*.attn.in_proj_weight [3W,W] (+ bias)           */self_attn/{q,k,v}_proj/kernel = rows [0:W],[W:2W],[2W:3W] ^T
*.attn.out_proj.weight                          */self_attn/out_proj/kernel (transposed)
*.mlp.c_fc / c_proj                             */mlp/fc1 / fc2 (transposed)
token_embedding.weight, positional_embedding    text_model/embeddings/token_embedding, position_embedding
ln_final                                        text_model/final_layer_norm
visual.proj [W,E], text_projection [Wt,E]       visual_projection/kernel, text_projection/kernel (NOT transposed:
                                                open_clip multiplies x @ proj, Flax Dense kernels are [in, out])
logit_scale                                     logit_scale (log of the temperature, as in both libraries)
==============================================  ==================================================================

Activation: open_clip uses exact GELU unless the model config says ``quick_gelu`` (OpenAI weights). Layer norms
use eps 1e-5 in both. Text pooling: open_clip takes the argmax token id (the end-of-text token, the largest id);
the converted config sets ``eos_token_id`` to that id, so transformers pools at its first occurrence: the same
position for every tokenizer output.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np
from etils import epath
from transformers import CLIPConfig

from amd_jax import tensor_files
from amd_jax.models.common import state_dict

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json")  # copied next to the weights by write_folder

# Architectures of the registry's open_clip models (open_clip/model_configs/*.json).
OPENCLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "ViT-H-14": {
        "embed_dim": 1024,
        "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
    },
    "ViT-g-14": {
        "embed_dim": 1024,
        "vision_cfg": {
            "image_size": 224, "layers": 40, "width": 1408, "head_width": 88, "mlp_ratio": 4.3637, "patch_size": 14,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
    },
}

# open_clip options whose default is the only behaviour the converted FlaxCLIPModel reproduces.
_VISION_DEFAULTS = {
    "ls_init_value": None, "patch_dropout": 0.0, "attentional_pool": False, "no_ln_pre": False,
    "final_ln_after_pool": False, "pool_type": "tok", "output_tokens": False, "timm_model_name": None,
    "act_kwargs": None, "norm_kwargs": None, "pos_embed_type": "learnable",
}
_TEXT_DEFAULTS = {
    "ls_init_value": None, "hf_model_name": None, "embed_cls": False, "no_causal_mask": False,
    "pool_type": "argmax", "proj_bias": False, "proj_type": "linear", "output_tokens": False,
    "act_kwargs": None, "norm_kwargs": None, "attn_mask": True,
}
_ALLOWED_VISION = {"image_size", "layers", "width", "head_width", "mlp_ratio", "patch_size"}
_ALLOWED_TEXT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "pad_id"}


def _check_supported(section: Mapping[str, Any], allowed: set, defaults: Mapping[str, Any], where: str):
    for key, value in section.items():
        if key in allowed:
            continue
        if key in defaults and value == defaults[key]:
            continue
        raise NotImplementedError(
            f"open_clip {where} option {key}={value!r} is not supported by the FlaxCLIPModel conversion"
        )


def clip_config_from_openclip(model_cfg: Mapping[str, Any]) -> CLIPConfig:
    """transformers CLIPConfig of an open_clip ViT model config (the ``model_cfg`` of open_clip_config.json)."""
    vis, txt = dict(model_cfg["vision_cfg"]), dict(model_cfg["text_cfg"])
    for key in model_cfg:
        if key not in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "init_logit_scale",
                       "init_logit_bias", "cast_dtype"):
            raise NotImplementedError(f"open_clip model option {key!r} is not supported by the conversion")
    if model_cfg.get("init_logit_bias") is not None:
        raise NotImplementedError("open_clip models with a logit bias (SigLIP) are not supported")
    if isinstance(vis["image_size"], (tuple, list)) or isinstance(vis["patch_size"], (tuple, list)):
        raise NotImplementedError("only square image_size / patch_size are supported")
    _check_supported(vis, _ALLOWED_VISION, _VISION_DEFAULTS, "vision_cfg")
    _check_supported(txt, _ALLOWED_TEXT, _TEXT_DEFAULTS, "text_cfg")
    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
    v_width = vis["width"]
    v_heads = v_width // vis.get("head_width", 64)
    t_width, t_heads = txt.get("width", 512), txt.get("heads", 8)
    vocab = txt.get("vocab_size", 49408)
    text_config = dict(
        vocab_size=vocab, hidden_size=t_width, intermediate_size=int(t_width * txt.get("mlp_ratio", 4.0)),
        num_hidden_layers=txt.get("layers", 12), num_attention_heads=t_heads,
        max_position_embeddings=txt.get("context_length", 77), hidden_act=act, layer_norm_eps=1e-5,
        projection_dim=model_cfg["embed_dim"], pad_token_id=txt.get("pad_id", 0),
        bos_token_id=vocab - 2, eos_token_id=vocab - 1,
    )
    vision_config = dict(
        hidden_size=v_width, intermediate_size=int(v_width * vis.get("mlp_ratio", 4.0)),
        num_hidden_layers=vis["layers"], num_attention_heads=v_heads, image_size=vis["image_size"],
        patch_size=vis["patch_size"], hidden_act=act, layer_norm_eps=1e-5, projection_dim=model_cfg["embed_dim"],
    )
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=model_cfg["embed_dim"],
                      logit_scale_init_value=math.log(1 / 0.07))


def openclip_key_shapes(config: CLIPConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape an open_clip checkpoint of this architecture must contain (no more)."""
    v, t, e = config.vision_config, config.text_config, config.projection_dim
    n_pos = (v.image_size // v.patch_size) ** 2 + 1
    shapes = {
        "visual.conv1.weight": (v.hidden_size, 3, v.patch_size, v.patch_size),
        "visual.class_embedding": (v.hidden_size,),
        "visual.positional_embedding": (n_pos, v.hidden_size),
        "visual.ln_pre.weight": (v.hidden_size,), "visual.ln_pre.bias": (v.hidden_size,),
        "visual.ln_post.weight": (v.hidden_size,), "visual.ln_post.bias": (v.hidden_size,),
        "visual.proj": (v.hidden_size, e),
        "token_embedding.weight": (t.vocab_size, t.hidden_size),
        "positional_embedding": (t.max_position_embeddings, t.hidden_size),
        "ln_final.weight": (t.hidden_size,), "ln_final.bias": (t.hidden_size,),
        "text_projection": (t.hidden_size, e),
        "logit_scale": (),
    }
    for prefix, cfg in (("visual.transformer", v), ("transformer", t)):
        w, m = cfg.hidden_size, cfg.intermediate_size
        for i in range(cfg.num_hidden_layers):
            p = f"{prefix}.resblocks.{i}."
            shapes.update({
                p + "ln_1.weight": (w,), p + "ln_1.bias": (w,), p + "ln_2.weight": (w,), p + "ln_2.bias": (w,),
                p + "attn.in_proj_weight": (3 * w, w), p + "attn.in_proj_bias": (3 * w,),
                p + "attn.out_proj.weight": (w, w), p + "attn.out_proj.bias": (w,),
                p + "mlp.c_fc.weight": (m, w), p + "mlp.c_fc.bias": (m,),
                p + "mlp.c_proj.weight": (w, m), p + "mlp.c_proj.bias": (w,),
            })
    return shapes


# Buffers that some open_clip / HPSv2 checkpoints carry and the network does not need.
_IGNORED_OPENCLIP = ("attn_mask", "logit_bias_unused")


_WORDING = state_dict.Wording(
    header="open_clip checkpoint does not match the model config: ", groups=True, limit=8, sort=state_dict.KINDS,
    missing="missing tensors: {names}{more} ({count})", unexpected="unexpected tensors: {names}{more} ({count})",
    misshaped="shape mismatches: {items}")


def check_openclip_state_dict(state: Mapping[str, Any], config: CLIPConfig) -> None:
    """Raise a ValueError naming every missing, unexpected or wrongly shaped open_clip tensor."""
    got = {k: v for k, v in state.items() if k not in _IGNORED_OPENCLIP}
    state_dict.check(got, openclip_key_shapes(config), _WORDING, error=ValueError)


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Drop a DDP ``module.`` prefix if every key has it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _ln(state, name):
    return {"scale": state[name + ".weight"], "bias": state[name + ".bias"]}


def _encoder(state, prefix, n_layers):
    layers = {}
    for i in range(n_layers):
        p = f"{prefix}.resblocks.{i}."
        w_in, b_in = state[p + "attn.in_proj_weight"], state[p + "attn.in_proj_bias"]
        width = w_in.shape[1]
        attn = {
            name: {"kernel": w_in[j * width:(j + 1) * width].T, "bias": b_in[j * width:(j + 1) * width]}
            for j, name in enumerate(("q_proj", "k_proj", "v_proj"))
        }
        attn["out_proj"] = {"kernel": state[p + "attn.out_proj.weight"].T, "bias": state[p + "attn.out_proj.bias"]}
        layers[str(i)] = {
            "self_attn": attn,
            "layer_norm1": _ln(state, p + "ln_1"),
            "layer_norm2": _ln(state, p + "ln_2"),
            "mlp": {
                "fc1": {"kernel": state[p + "mlp.c_fc.weight"].T, "bias": state[p + "mlp.c_fc.bias"]},
                "fc2": {"kernel": state[p + "mlp.c_proj.weight"].T, "bias": state[p + "mlp.c_proj.bias"]},
            },
        }
    return {"layers": layers}


def convert_openclip_state_dict(state: Mapping[str, Any], config: CLIPConfig) -> dict[str, Any]:
    """open_clip tensors (numpy or jax arrays, or ShapeDtypeStructs under jax.eval_shape) -> FlaxCLIPModel params.

    Pure array ops only, so ``jax.eval_shape(lambda s: convert_openclip_state_dict(s, cfg), abstract)`` checks a
    full-size tree without memory. Call :func:`check_openclip_state_dict` first for readable errors.
    """
    s = state
    vision = {
        "embeddings": {
            "class_embedding": s["visual.class_embedding"],
            "patch_embedding": {"kernel": s["visual.conv1.weight"].transpose(2, 3, 1, 0)},
            "position_embedding": {"embedding": s["visual.positional_embedding"]},
        },
        "pre_layrnorm": _ln(s, "visual.ln_pre"),
        "encoder": _encoder(s, "visual.transformer", config.vision_config.num_hidden_layers),
        "post_layernorm": _ln(s, "visual.ln_post"),
    }
    text = {
        "embeddings": {
            "token_embedding": {"embedding": s["token_embedding.weight"]},
            "position_embedding": {"embedding": s["positional_embedding"]},
        },
        "encoder": _encoder(s, "transformer", config.text_config.num_hidden_layers),
        "final_layer_norm": _ln(s, "ln_final"),
    }
    return {
        "text_model": text,
        "vision_model": vision,
        "visual_projection": {"kernel": s["visual.proj"]},
        "text_projection": {"kernel": s["text_projection"]},
        "logit_scale": s["logit_scale"].reshape(()),
    }


def write_folder(state: dict[str, np.ndarray], out_dir, model_cfg: dict, tokenizer_dir=None,
                 preprocess_cfg: dict | None = None) -> epath.Path:
    """Check `state` (open_clip names, numpy) against open_clip's `model_cfg` and write the folder
    ``load_reward('hpsv2' | 'clip_g14', folder)`` reads: open_clip_model.safetensors (float32, a DDP ``module.``
    prefix removed), open_clip_config.json and the tokenizer files found in `tokenizer_dir`.
    `preprocess_cfg` (open_clip's mean/std...) is stored when given; without it the loader uses OpenAI's
    mean/std, which is what ViT-H-14 (HPSv2) and ViT-g-14 use."""
    state = {k: np.array(v, np.float32, order="C") for k, v in strip_prefix(state).items()}  # keeps 0-d
    check_openclip_state_dict(state, clip_config_from_openclip(model_cfg))  # before writing anything
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensor_files.write(out / "open_clip_model.safetensors", state)
    meta = {"model_cfg": model_cfg, **({"preprocess_cfg": preprocess_cfg} if preprocess_cfg else {})}
    (out / "open_clip_config.json").write_text(json.dumps(meta, indent=1))
    if tokenizer_dir:
        src = epath.Path(tokenizer_dir)
        for name in TOKENIZER_FILES:
            if (src / name).exists():
                (out / name).write_bytes((src / name).read_bytes())
    return out
