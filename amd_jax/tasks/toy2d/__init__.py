"""toy2d: a 2-D class-conditional mixture; MLP denoisers; the reward is the true log-density (configs/toy2d.py)."""

from __future__ import annotations

import functools

import numpy as np

from amd_jax.data.toy2d import Toy2D
from amd_jax.metrics import toy2d as metrics_lib
from amd_jax.tasks.toy2d import models as nets
from amd_jax.tasks import Task
from amd_jax.tasks.common import class_labels, trained_teacher
from amd_jax.tasks.toy2d.checks import check  # the task's config checks (validate runs them)

GROUPED_DATA = True  # the data put each condition on amd.group_size consecutive rows


def build(config, mesh=None) -> Task:
    del mesh  # every process computes the whole (small) global batch
    data = Toy2D(**config.data.to_dict())
    models = nets.build(config, data)
    eval_conds = functools.partial(class_labels, num_classes=data.num_classes)

    def evaluate(x, cond, rewards, zone, title="", save_dir=None):
        del save_dir  # no per-sample files for 2-D points
        labels = cond["label"]
        rewards = data.log_density(x, labels) if rewards is None else rewards
        metrics = metrics_lib.evaluate(data, np.asarray(x), labels, np.asarray(rewards))
        if zone is not None:
            metrics["zone_fraction"] = float(np.mean(zone))
        return metrics, {"samples": metrics_lib.scatter_png(data, np.asarray(x), labels, zone, title)}

    teacher = trained_teacher(config, models, data, eval_conds, evaluate)

    # the teacher (above) trains on ungrouped batches; the distillation's put each label on amd.group_size rows
    return Task(models=models, data=data.grouped(config.amd.group_size), teacher=teacher,
                reward=lambda: None, eval_conds=eval_conds, evaluate=evaluate)
