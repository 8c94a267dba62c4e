"""What several tasks share: class-label evaluation conditions, the teacher's quality report, and the teacher trained
on first use with its DDIM report (toy2d, zones2d)."""

from __future__ import annotations

import functools
import json
import logging
from typing import Callable

import jax
import numpy as np
from etils import epath
from PIL import Image

from amd_jax import caches, paths, phases, writers
from amd_jax.errors import DamagedFileError
from amd_jax.tasks import teacher as teacher_lib

log = logging.getLogger("amd_jax")


def class_labels(n: int, num_classes: int) -> dict:
    """Class-conditional tasks: n labels cycling through the classes."""
    return {"label": (np.arange(n) % num_classes).astype(np.int32)}


def teacher_report(config, build: Callable[[], tuple[dict, np.ndarray | None]], image: bool = False,
                   teacher=None) -> None:
    """The teacher's own quality in teacher.dir: eval.json, and samples.png when `image`.

    `build() -> (metrics, image or None)` runs once, on process 0 only; a report that cannot be read is moved
    aside and built again (amd_jax.caches). The image is written first and eval.json last, so an eval.json
    means a complete report. With `teacher` (its parameters) eval.json records the teacher's content digest
    (`teacher_digest`, amd_jax.caches.fingerprint), and a report of another teacher (one retrained after damage,
    or replaced) is moved aside and built again. A non-finite metric is written as null with a note
    (writers.save_json), never as bare NaN.
    """
    if jax.process_index() != 0:
        return
    folder = epath.Path(paths.absolute(config.teacher.dir))
    files = [folder / "eval.json"] + ([folder / "samples.png"] if image else [])
    digest = None if teacher is None else caches.fingerprint(teacher)

    def load():
        report = json.loads(files[0].read_text())
        if not isinstance(report, dict):
            raise DamagedFileError("not a JSON object")
        if digest is not None and report.get("teacher_digest") != digest:
            raise DamagedFileError(f"it reports another teacher (teacher_digest {report.get('teacher_digest')}, "
                                   f"the teacher in params is {digest})")
        for png in files[1:]:
            with Image.open(png) as im:
                im.load()  # decodes every row: a truncated PNG raises OSError
        log.info("The teacher's quality report (%s): %s", files[0], report_figures(report))

    def announced_build():
        with phases.announced(f"The teacher's quality report (into {files[0]})") as note:
            report = build()
            note["result"] = report_figures(report[0])
        return report

    def save(report):
        if image:
            writers.save_png(files[1], report[1])
        writers.save_json(files[0], report[0] if digest is None else {**report[0], "teacher_digest": digest})

    caches.load_or_build(files, load, announced_build, save)


def report_figures(report: dict) -> str:
    """The numbers of a teacher's report as 'fid=8.36 precision=0.89 ...' (its digest and texts left out)."""
    return writers.fmt({k: float(v) for k, v in report.items() if writers.is_number(v)})


def trained_teacher(config, models, train_data, eval_conds: Callable, evaluate: Callable) -> Callable[[], dict]:
    """The task's `teacher` hook for a teacher trained on first use on `train_data` (amd_jax/tasks/teacher.py),
    reported once by 50-step DDIM with the distillation's CFG scale on eval.num_samples conditions (`evaluate`:
    the task's, returning (metrics, images)); cached, so the teacher loads once per process."""

    @functools.cache
    def teacher():
        params = teacher_lib.load_or_train(config, models, train_data)

        def report():
            conds = eval_conds(config.eval.num_samples)
            x = teacher_lib.sample_teacher(models, params, conds, config.dmd.guidance_scale, steps=50)
            metrics, _ = evaluate(x, conds, None, None)
            return {**metrics, "sampler": "ddim50", "guidance_scale": config.dmd.guidance_scale}, None

        teacher_report(config, report, teacher=params)
        return params

    return teacher
