"""The imagenet task in abstract mode (the TPU plan, amd_jax/plan): its abstract batch and frozen parameters
against what its loaders and data really give (sit_tiny fixtures), and, with every path empty, the published
architectures' parameter counts (SiT-XL/2, sd-vae-ft-ema, ViT-B/16)."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from amd_jax import tasks
from amd_jax.config import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: (tuple(np.shape(a)), jnp.dtype(a.dtype).name), tree)


def _count(tree) -> int:
    return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(tree))


def test_abstract_imagenet_task_matches_its_loaders_and_data():
    """sit_tiny: the abstract teacher (bf16), reward {'vae', 'classifier'} and batch have exactly the shapes and
    dtypes of what the real task loads (tiny fixtures) and batches, with and without real latents."""
    config = load(os.path.join(CONFIGS, "sit_tiny.py"))
    real, abstract = tasks.build(config), tasks.build(config, abstract=True)
    frozen = abstract.abstract_frozen()
    assert jnp.dtype(jax.tree_util.tree_leaves(frozen["teacher"])[0].dtype) == jnp.bfloat16
    assert _shapes(frozen["teacher"]) == _shapes(real.teacher())
    assert _shapes(frozen["reward"]) == _shapes(real.reward())
    assert _shapes(abstract.abstract_batch(config.global_batch)) == _shapes(real.data.global_batch(0, 8))
    assert abstract.data is None and abstract.teacher is None


def test_abstract_imagenet_batch_with_real_latents(tmp_path):
    path = str(tmp_path / "real.npz")
    np.savez(path, latents=np.zeros((20, 8, 8, 4), np.float32), labels=np.arange(20) % 10)
    config = load(os.path.join(CONFIGS, "sit_tiny.py"), {"gan.enabled": True, "data.real": path})
    real, abstract = tasks.build(config), tasks.build(config, abstract=True)
    batch = abstract.abstract_batch(config.global_batch)
    assert batch["real"].shape == (8, 8, 8, 4)
    assert _shapes(batch) == _shapes(real.data.global_batch(0, 8))


def test_sit_xl2_plans_with_no_file_and_the_published_architectures():
    """configs/sit_xl2.py with empty model.path, model.vae_path, reward.path: the parameter counts are the
    published ones: SiT-XL/2 675M (SiT paper, 674,834,720 with learn_sigma's 8 outputs), the SD VAE 83,653,863,
    ViT-B/16 with a 1000-class head 86,567,656 (transformers' ViTForImageClassification for
    google/vit-base-patch16-224)."""
    config = load(os.path.join(CONFIGS, "sit_xl2.py"))
    assert not (config.model.path or config.model.vae_path or config.reward.path)
    task = tasks.build(config, abstract=True)
    frozen = task.abstract_frozen()
    assert _count(frozen["teacher"]) == 674_834_720
    assert _count(frozen["reward"]["vae"]) == 83_653_863
    assert _count(frozen["reward"]["classifier"]) == 86_567_656
    assert frozen["reward"]["classifier"]["params"]["classifier"]["kernel"].shape == (768, 1000)
    assert _shapes(task.abstract_batch(256)) == {"cond": {"label": ((256,), "int32")}, "real": ((256, 1), "float32")}
