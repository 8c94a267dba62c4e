"""toy2d's own config checks (amd_jax.config.validate runs `check` once, before anything is built): the mixture
(`data.*`, amd_jax/data/toy2d.py), the MLP (`model.*`, amd_jax/models/small/mlp.py), the first-use teacher, the
reward's name, and enough samples of each class for the metrics. zones2d (amd_jax/tasks/zones2d/checks.py) has the
same data, model and teacher and calls `check_mixture_and_mlp`."""

from __future__ import annotations

from amd_jax.config.checks import SEED_MAX, check_table, knob, need
from amd_jax.tasks.checks import check_prediction_type, check_teacher, need_per_class

REWARD = "toy2d_log_density"  # the reward is the true log p(x | class) (amd_jax/tasks/toy2d/models.py)

_INTS = {
    "data.num_classes": (1, "the number of classes (each owns modes_per_class modes on the ring)"),
    "data.modes_per_class": (1, "the Gaussian modes of each class"),
    "data.seed": (0, SEED_MAX, "the seed of the data's batches (numpy's default_rng([seed, step]))"),
    "model.hidden": (2, "the MLP's width; its sinusoidal timestep embedding splits it into cos and sin halves"),
    "model.depth": (0, "the MLP's residual blocks (0 = the input and output layers only)"),
}
# The data live on the scale of the diffusion's N(0, I) noise: the configs use a ring of radius 2 and modes of std
# 0.15 (amd_jax/data/toy2d.py).
_FLOATS = (
    ("data.radius", lambda v: 0 < v <= 100, "a value in (0, 100], e.g. 2.0",
     "the ring the modes sit on: 0 puts every class at the origin, and far beyond the noise's unit scale the "
     "one-step student must jump to targets of that size (1e30 failed late, blaming another knob)"),
    ("data.std", lambda v: 1e-3 <= v <= 100, "a value in [1e-3, 100], e.g. 0.15",
     "each mode's standard deviation: the reward log p(x | c) divides by std^2, which underflows to 0 in float32 "
     "below about 1e-19 (std=0 or 1e-30 gave an inf reward, std < 0 a negative-variance density) and gives "
     "rewards of -1e6 and worse below 1e-3"),
)


def check_mixture_and_mlp(config) -> None:
    """data.*, model.*, teacher.* and the per-class sample counts of toy2d and zones2d."""
    check_table(config, ints=_INTS, floats=_FLOATS)
    check_prediction_type(config)
    check_teacher(config)
    # recall's k = 3 nearest neighbours and the MMD's pairs are computed per class (amd_jax/metrics/toy2d.py)
    need_per_class(config, config.data.num_classes, 4, "the per-class recall (k = 3 nearest neighbours)")


def check(config) -> None:
    """toy2d's config checks (amd_jax.tasks.check runs them before anything is built)."""
    check_mixture_and_mlp(config)
    name = knob(config, "reward.name")
    need(name == REWARD, f"reward.name={name!r}: toy2d's reward is the true log-density of its mixture; set "
                         f"--config.reward.name={REWARD} (no other reward exists for this task).")
