"""Handwritten digits, class-conditional: scikit-learn's 8x8 load_digits (configs/digits.py) or MNIST 28x28
(configs/mnist.py). A UNet teacher trained on first use, a frozen classifier as the reward (data.name picks the
data, reward.name the classifier), and a held-out CNN trained on the train split as the evaluator (class accuracy,
FID / precision / recall / diversity in its features)."""

from __future__ import annotations

import functools

import jax
import numpy as np
from etils import epath

from amd_jax.tasks import teacher as teacher_lib
from amd_jax.data.mnist import make_data
from amd_jax.metrics import mnist as metrics_lib
from amd_jax.tasks.digits import models as nets
from amd_jax.tasks import Task
from amd_jax.tasks.common import class_labels, teacher_report
from amd_jax.tasks.digits.checks import check  # the task's config checks (validate runs them)

GROUPED_DATA = True  # the data put each condition on amd.group_size consecutive rows


def build(config, mesh=None) -> Task:
    del mesh  # every process computes the whole (small) global batch
    data = make_data(config.data)
    models = nets.build(config, data)
    eval_conds = functools.partial(class_labels, num_classes=data.num_classes)

    def folder(key, default):  # '' = a sibling of the teacher's dir, shared by runs that share the teacher
        return config[key].dir if config[key].get("dir") else str(epath.Path(config.teacher.dir).parent / default)

    @functools.cache
    def reward_and_report():
        return nets.load_reward(config, data, folder("reward", "reward"))

    @functools.cache
    def evaluator():
        e = config.eval
        return metrics_lib.Evaluator(data, folder("eval", "classifier"), e.classifier_steps, e.feature_dim,
                                     e.classifier_width)

    def evaluate(x, cond, rewards, zone, title="", save_dir=None):
        del title, save_dir  # the grid's rows are the classes; no per-sample files
        metrics = evaluator().metrics(x, cond["label"], rewards)
        if zone is not None:
            metrics["zone_fraction"] = float(np.mean(zone))
        return metrics, {"samples": metrics_lib.sample_grid(x, cond["label"], scale=config.eval.grid_scale,
                                                            zone=zone)}

    @functools.cache
    def teacher():
        reward, reward_report = reward_and_report()
        params = teacher_lib.load_or_train(config, models, data, per_step=True)  # per step: convs on XLA:CPU
        evaluator()

        def report():  # many-step DDIM with the distillation's CFG scale
            conds = eval_conds(config.eval.teacher_num_samples)
            x = teacher_lib.sample_teacher(models, params, conds, config.dmd.guidance_scale,
                                           steps=config.eval.teacher_steps)
            r = np.asarray(jax.jit(models.reward)(reward, jax.numpy.asarray(x), conds))
            metrics, images = evaluate(x, conds, r, None)
            return {**metrics, "sampler": f"ddim{config.eval.teacher_steps}",
                    "guidance_scale": config.dmd.guidance_scale, "reward_model": reward_report}, images["samples"]

        teacher_report(config, report, image=True, teacher=params)
        return params

    # the teacher (above) trains on ungrouped batches; the distillation's put each label on amd.group_size rows
    return Task(models=models, data=data.grouped(config.amd.group_size), teacher=teacher,
                reward=lambda: reward_and_report()[0], eval_conds=eval_conds, evaluate=evaluate)
