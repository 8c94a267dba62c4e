"""What several tasks share: class-label evaluation conditions and the teacher's quality report."""

from __future__ import annotations

import json
from typing import Callable

import jax
import numpy as np
from etils import epath
from PIL import Image

from amd_jax import caches, paths, writers
from amd_jax.errors import DamagedFileError


def class_labels(n: int, num_classes: int) -> dict:
    """Class-conditional tasks: n labels cycling through the classes."""
    return {"label": (np.arange(n) % num_classes).astype(np.int32)}


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
