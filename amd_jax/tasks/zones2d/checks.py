"""zones2d's own config checks (amd_jax.config.validate runs `check` once, before anything is built): toy2d's
mixture, MLP and teacher (amd_jax/tasks/toy2d/checks.py), the Forbidden Zone (`zone.*`, amd_jax/data/zones2d.py)
and the reward proxy (`reward.*`, amd_jax/tasks/zones2d/models.py)."""

from __future__ import annotations

from amd_jax.config.checks import check_table, knob, need
from amd_jax.tasks.toy2d.checks import check_mixture_and_mlp

REWARD = "zones2d_proxy"

_INTS = {
    "zone.source_class": (0, "the class that owns the zone's mode"),
    "zone.source_mode": (0, "which of source_class's modes is the zone"),
    "zone.target_class": (0, "the label the teacher's data gives the zone mode's points"),
}
_FLOATS = (
    ("zone.flip", lambda v: 0 <= v <= 1, "a value in [0, 1] (0 = clean teacher data, no zone), e.g. 1.0",
     "the fraction of the zone mode's points relabelled in the teacher's data"),
    ("zone.radius_std", lambda v: 0 < v <= 100, "a value in (0, 100], e.g. 3.0",
     "the zone's radius in data standard deviations: 0 holds no point"),
    ("reward.std_scale", lambda v: 0 < v <= 100, "a value in (0, 100], e.g. 2.0",
     "the proxy's widening of every mode's std: <= 0 divides by zero"),
    ("reward.noise", lambda v: 0 <= v <= 100, "a value in [0, 100] (0 = no random field), e.g. 1.0",
     "the std of the proxy's fixed random field: negative flips it, and far above the log-density's own spread "
     "the proxy is noise"),
    ("reward.length", lambda v: 1e-3 <= v <= 100, "a value in [1e-3, 100], e.g. 0.5",
     "the random field's length scale (its frequencies are 1 / length): 0 divides by zero"),
)


def check(config) -> None:
    """zones2d's config checks (amd_jax.tasks.check runs them before anything is built)."""
    check_mixture_and_mlp(config)
    check_table(config, ints=_INTS, floats=_FLOATS)
    z, d = config.zone, config.data
    need(z.source_class < d.num_classes,
         f"zone.source_class={z.source_class}: a class in [0, data.num_classes={d.num_classes}).")
    need(z.target_class < d.num_classes and z.target_class != z.source_class,
         f"zone.target_class={z.target_class}: another class than zone.source_class={z.source_class}, in [0, "
         f"data.num_classes={d.num_classes}) (the same class relabels nothing).")
    need(z.source_mode < d.modes_per_class,
         f"zone.source_mode={z.source_mode}: a mode in [0, data.modes_per_class={d.modes_per_class}).")
    name = knob(config, "reward.name")
    need(name == REWARD, f"reward.name={name!r}: zones2d's reward is its proxy (reward.std_scale, noise, length); "
                         f"set --config.reward.name={REWARD} (no other reward exists for this task).")
