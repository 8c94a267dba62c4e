"""zones2d: toy2d with a Forbidden Zone by construction (configs/zones2d.py, amd_jax/data/zones2d.py).

The teacher trains on label-noisy data (one mode of one class relabelled as another class), so its guidance is
wrong on that mode's region R; the reward is an imperfect proxy (amd_jax/tasks/zones2d/models.py); the evaluation counts
the samples in R with a wrong label against the clean data (amd_jax/metrics/zones2d.py).
"""

from __future__ import annotations

import functools

import numpy as np

from amd_jax.data.toy2d import Toy2D
from amd_jax.data.zones2d import NoisyTeacherData, Zone
from amd_jax.metrics import toy2d as plots
from amd_jax.metrics import zones2d as metrics_lib
from amd_jax.tasks.zones2d import models as nets
from amd_jax.tasks import Task
from amd_jax.tasks.common import class_labels, trained_teacher
from amd_jax.tasks.zones2d.checks import check  # the task's config checks (validate runs them)

GROUPED_DATA = True  # the data put each condition on amd.group_size consecutive rows


def build(config, mesh=None) -> Task:
    del mesh  # every process computes the whole (small) global batch
    data, zone = Toy2D(**config.data.to_dict()), Zone(**config.zone.to_dict())
    models = nets.build(config, data, zone)
    eval_conds = functools.partial(class_labels, num_classes=data.num_classes)

    def evaluate(x, cond, rewards, flags, title="", save_dir=None):
        del save_dir  # no per-sample files for 2-D points
        x, labels = np.asarray(x), cond["label"]
        rewards = models.reward(None, x, cond) if rewards is None else rewards
        metrics = metrics_lib.evaluate(data, zone, x, labels, np.asarray(rewards), flags)
        return metrics, {"samples": plots.scatter_png(data, x, labels, flags, title)}

    # the teacher trains on the label-noisy data: its DDIM report shows the zone the teacher itself samples in
    teacher = trained_teacher(config, models, NoisyTeacherData(data, zone), eval_conds, evaluate)

    return Task(models=models, data=data.grouped(config.amd.group_size), teacher=teacher,
                reward=lambda: None, eval_conds=eval_conds, evaluate=evaluate)
