"""Throughput of a CLIP scorer's jitted forward pass (preprocess + image tower + text tower + score), random weights.

    python -m amd_jax.tools.bench_rewards --arch=ViT-H-14 --batch=4 --image=256 --iters=3 [--bf16]

Architectures: the open_clip configs (ViT-H-14: HPSv2 / PickScore size, ViT-g-14) or ``clip_l14`` (OpenAI
ViT-L/14). Prints compile time and images/s after compilation.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("USE_TF", "0")  # before transformers is imported: it must not load TensorFlow

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from transformers import CLIPConfig  # noqa: E402

from amd_jax import cli  # noqa: E402
from amd_jax.models.rewards import openclip_weights as oc  # noqa: E402
from amd_jax.models.rewards.clip_scorers import CLIPScorer, abstract_clip_params  # noqa: E402
from amd_jax.models.rewards.preprocess import PreprocessConfig  # noqa: E402

CLIP_L14 = dict(
    text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     hidden_act="quick_gelu", eos_token_id=2),
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14, hidden_act="quick_gelu"),
    projection_dim=768,
)

_ARCH = flags.DEFINE_enum("arch", "ViT-H-14", [*oc.OPENCLIP_CONFIGS, "clip_l14"], "The scorer's architecture.")
_BATCH = flags.DEFINE_integer("batch", 4, "Images (and prompts) per call.")
_IMAGE = flags.DEFINE_integer("image", 256, "Input resolution (resized to 224 inside).")
_ITERS = flags.DEFINE_integer("iters", 3, "Timed calls after the compiling one.")
_BF16 = flags.DEFINE_bool("bf16", False, "Compute in bfloat16 (params stay float32).")


def random_params(config: CLIPConfig, seed: int = 0):
    """N(0, 0.02) float32 weights of the right tree (numpy's generator: ~100x faster than jax.random on CPU)."""
    rng = np.random.default_rng(seed)

    def leaf(s):
        return jnp.asarray(0.02 * rng.standard_normal(s.shape, dtype=np.float32))

    return jax.tree_util.tree_map(leaf, abstract_clip_params(config))


def main(argv):
    del argv
    arch, batch, image = _ARCH.value, _BATCH.value, _IMAGE.value
    if arch == "clip_l14":
        config, crop = CLIPConfig(**CLIP_L14), "hf"
    else:
        config, crop = oc.clip_config_from_openclip(oc.OPENCLIP_CONFIGS[arch]), "torchvision"
    dtype = jnp.bfloat16 if _BF16.value else jnp.float32
    t0 = time.perf_counter()
    params = jax.block_until_ready(random_params(config))
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(f"{arch}: {n / 1e6:.0f}M params, random init {time.perf_counter() - t0:.1f}s")
    scorer = CLIPScorer(arch, config, params, PreprocessConfig(config.vision_config.image_size, crop=crop),
                        "cosine", dtype=dtype)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(-1, 1, (batch, image, image, 3)), jnp.float32)
    tokens = jnp.asarray(rng.integers(1, 49406, (batch, config.text_config.max_position_embeddings)), jnp.int32)
    tokens = tokens.at[:, 20].set(config.text_config.vocab_size - 1)
    score = jax.jit(scorer.score)
    t0 = time.perf_counter()
    out = jax.block_until_ready(score(params, images, tokens))
    print(f"compile + first call {time.perf_counter() - t0:.1f}s, out {out.dtype}{out.shape}")
    times = []
    for _ in range(_ITERS.value):
        t0 = time.perf_counter()
        jax.block_until_ready(score(params, images, tokens))
        times.append(time.perf_counter() - t0)
    best, mean = min(times), float(np.mean(times))
    print(f"batch {batch} at {image}px -> 224: {mean:.2f}s/batch (best {best:.2f}s), "
          f"{batch / mean:.2f} images/s (best {batch / best:.2f}) on {jax.devices()[0].platform}")


if __name__ == "__main__":
    cli.run(main)
