"""The registry of experiments: what differs between toy2d, MNIST, SDXL, ... behind one small interface.

An Experiment builds the model bundle, provides the frozen parameters (teacher, reward model), the evaluation
conditions and turns generated samples into metrics and images. Everything else (mesh, steps, checkpoints,
logging) is shared by the trainer.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import jax
import numpy as np
from etils import epath
from PIL import Image

from amd_jax import caches, paths, writers
from amd_jax.errors import DamagedFileError
from amd_jax.models.bundle import Models


@dataclasses.dataclass(frozen=True)
class Experiment:
    build: Callable[[Any], Models]
    frozen: Callable[[Any, Models], dict]  # (config, models) -> {'teacher': params, 'reward': params | None}
    eval_conds: Callable[[Any, Models, int], dict]  # (config, models, n) -> host cond pytree of n samples
    # (config, models, x, cond, rewards, zone, title[, save_dir]) -> metrics, images; save_dir only where the
    # config has eval.save_images (SDXL: every decoded image as a PNG)
    evaluate: Callable[..., tuple[dict, dict]]


def eval_conds(config, models, n):
    """Class-conditional experiments (toy2d, MNIST, digits): n labels cycling through the classes."""
    return {"label": (np.arange(n) % models.data.num_classes).astype(np.int32)}


def teacher_report(config, build: Callable[[], tuple[dict, np.ndarray | None]], image: bool = False) -> None:
    """The teacher's own quality in teacher.dir: eval.json, and samples.png when `image`.

    `build() -> (metrics, image or None)` runs once, on process 0 only; a report that cannot be read is moved
    aside and built again (amd_jax.caches). The image is written first and eval.json last, so an eval.json
    means a complete report.
    """
    if jax.process_index() != 0:
        return
    folder = epath.Path(paths.absolute(config.teacher.dir))
    files = [folder / "eval.json"] + ([folder / "samples.png"] if image else [])

    def load():
        if not isinstance(json.loads(files[0].read_text()), dict):
            raise DamagedFileError("not a JSON object")
        for png in files[1:]:
            with Image.open(png) as im:
                im.load()  # decodes every row: a truncated PNG raises OSError

    def save(report):
        if image:
            writers.save_png(files[1], report[1])
        writers.save_json(files[0], report[0])

    caches.load_or_build(files, load, build, save)


def _toy2d() -> Experiment:
    from amd_jax import teacher
    from amd_jax.eval import toy2d as ev
    from amd_jax.models import toy2d

    def evaluate(config, models, x, cond, rewards, zone, title=""):
        labels = cond["label"]
        rewards = models.data.log_density(x, labels) if rewards is None else rewards
        metrics = ev.evaluate(models.data, np.asarray(x), labels, np.asarray(rewards))
        if zone is not None:
            metrics["zone_fraction"] = float(np.mean(zone))
        return metrics, {"samples": ev.scatter_png(models.data, np.asarray(x), labels, zone, title)}

    def frozen(config, models):
        params = teacher.load_or_train(config, models)

        def report():  # 50-step DDIM with the distillation's CFG scale
            conds = eval_conds(config, models, config.eval.num_samples)
            x = teacher.sample_teacher(models, params, conds, config.dmd.guidance_scale, steps=50)
            metrics, _ = evaluate(config, models, x, conds, None, None)
            return {**metrics, "sampler": "ddim50", "guidance_scale": config.dmd.guidance_scale}, None

        teacher_report(config, report)
        return {"teacher": params, "reward": None}

    return Experiment(
        build=toy2d.build,
        frozen=frozen,
        eval_conds=eval_conds,
        evaluate=evaluate,
    )


def _images() -> Experiment:
    """MNIST / digits: UNet teacher trained on first use, frozen classifier reward, held-out CNN evaluator."""
    from amd_jax import teacher
    from amd_jax.eval import mnist as ev
    from amd_jax.models import mnist

    held = {}  # the held-out evaluator and the reward report, built once by frozen() (or lazily by evaluate())

    def _dir(config, key, default):  # '' = a sibling of the teacher's dir, shared by runs that share the teacher
        return config[key].dir if config[key].get("dir") else str(epath.Path(config.teacher.dir).parent / default)

    def evaluator(config, models):
        if "ev" not in held:
            e = config.eval
            held["ev"] = ev.Evaluator(models.data, _dir(config, "eval", "classifier"), e.classifier_steps,
                                      e.feature_dim, e.classifier_width)
        return held["ev"]

    def evaluate(config, models, x, cond, rewards, zone, title=""):
        metrics = evaluator(config, models).metrics(x, cond["label"], rewards)
        if zone is not None:
            metrics["zone_fraction"] = float(np.mean(zone))
        return metrics, {"samples": ev.sample_grid(x, cond["label"], scale=config.eval.grid_scale, zone=zone)}

    def frozen(config, models):
        reward, held["reward"] = mnist.load_reward(config, models.data, _dir(config, "reward", "reward"))
        # per-step jit: teacher.train_teacher's scan is slow for convs on CPU
        params = teacher.load_or_train(config, models, train=mnist.train_teacher)
        evaluator(config, models)

        def report():  # many-step DDIM with the distillation's CFG scale
            conds = eval_conds(config, models, config.eval.teacher_num_samples)
            x = teacher.sample_teacher(models, params, conds, config.dmd.guidance_scale, steps=config.eval.teacher_steps)
            r = np.asarray(jax.jit(models.reward)(reward, jax.numpy.asarray(x), conds))
            metrics, images = evaluate(config, models, x, conds, r, None)
            return {**metrics, "sampler": f"ddim{config.eval.teacher_steps}",
                    "guidance_scale": config.dmd.guidance_scale, "reward_model": held["reward"]}, images["samples"]

        teacher_report(config, report, image=True)
        return {"teacher": params, "reward": reward}

    return Experiment(build=mnist.build, frozen=frozen, eval_conds=eval_conds, evaluate=evaluate)


def _sdxl() -> Experiment:
    from amd_jax import experiments_sdxl

    return experiments_sdxl.experiment()


EXPERIMENTS: dict[str, Callable[[], Experiment]] = {"sdxl": _sdxl, "toy2d": _toy2d, "mnist": _images, "digits": _images}


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        from amd_jax.errors import ConfigError

        raise ConfigError(f"experiment={name!r} is not registered: choose one of {sorted(EXPERIMENTS)}.")
    return EXPERIMENTS[name]()
