"""The files that describe a training run as a whole, read and written by train.py outside the training loop.

- `finished(config, workdir)`: the run in `workdir` has nothing left to do (its newest checkpoint is at
  total_steps and every at-end results file, eval.json and eval_<name>.json, reads back valid for that step), so
  a re-run exits in seconds instead of building the models, compiling every step and evaluating again. Read only:
  no lock, nothing written, nothing compiled.
- `write_config(config, workdir, resume_step)`: WORKDIR/config.json, the resolved config of the run's first start;
  a later start with other values (only the resume-free keys may change: total_steps, eval, log, ...) adds
  config.<step>.json, named by the checkpoint it resumes from. Each file is what that start ran with, and none is
  overwritten once training has used it (the checkpoints' meta JSON also holds the config of each step).
"""

from __future__ import annotations

import json
import math

from etils import epath

from amd_jax import checkpoint as ckpt_lib
from amd_jax import evaluators, writers
from amd_jax.config import check_experiment, check_resume, flatten

EVAL_BLOCKS = ("eval", "evals")  # what the at-end evaluation computes: changed, the evaluation is run again


def finished(config, workdir) -> list[epath.Path] | None:
    """The at-end results files (possibly none, without eval.at_end or at-end config.evals) when the run is
    finished, else None. Finished: the newest checkpoint is at total_steps, its config has the same training
    semantics (check_experiment / check_resume: a changed one is refused with ConfigError, as a resume would be) and
    the same eval / evals blocks (else the evaluation must run again), and every at-end results file holds valid,
    finite results of that step. `config` is the one the run would train (paths made absolute by cli.prepare)."""
    workdir = epath.Path(workdir)
    found = ckpt_lib.newest_config(str(workdir))
    if found is None or found[0] != config.total_steps:
        return None
    step, saved = found
    files = [workdir / ev.json for ev in evaluators.registry(config).values() if ev.at_end]
    if not all(results_valid(f, step) for f in files):
        return None  # the Session's own checks then refuse a changed config, as on any resume
    current = config.copy_and_resolve_references().to_dict()
    check_experiment(found, current, workdir)
    check_resume(saved, current, step)
    return files if _eval_keys(saved) == _eval_keys(current) else None


def results_valid(path, step: int) -> bool:
    """`path` is a results file of `step` as writers.save_eval_json writes it: a JSON object with that step and
    only finite numbers (no NaN, no null-with-note of writers.json_text)."""
    try:
        data = json.loads(epath.Path(path).read_text(), parse_constant=_refuse)
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("step") != step or writers.NONFINITE in data:
        return False
    return all(math.isfinite(v) for v in data.values() if writers.is_number(v))


def write_config(config, workdir, resume_step: int | None) -> epath.Path | None:
    """Write the resolved `config` (config.json, or config.<step>.json on a resume with other values; see the
    module docstring) from process 0, atomically; returns the file written, None when the newest one already holds
    these values. Before any checkpoint (resume_step None) config.json is replaced: nothing was trained with it."""
    workdir = epath.Path(workdir)
    values = json.loads(config.to_json_best_effort())
    newest = max(_config_files(workdir), default=None)
    if newest is not None and _read(newest[1]) == values:
        return None
    path = workdir / ("config.json" if newest is None or resume_step is None else f"config.{resume_step:07d}.json")
    writers.save_json(path, values)
    return path


def _config_files(workdir: epath.Path) -> list[tuple[int, epath.Path]]:
    """(step, path) of config.json (step -1) and every config.<step>.json in `workdir`."""
    files = [(-1, workdir / "config.json")] if (workdir / "config.json").exists() else []
    for p in workdir.glob("config.*.json"):
        middle = p.name[len("config."):-len(".json")]
        if middle.isdigit():
            files.append((int(middle), p))
    return files


def _read(path: epath.Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _eval_keys(config_dict: dict) -> dict:
    """The flat eval.* and evals.* keys of a config dict, as JSON stores them (tuples as lists)."""
    flat = flatten(json.loads(json.dumps(config_dict, default=str)))
    return {k: v for k, v in flat.items() if k.split(".", 1)[0] in EVAL_BLOCKS}


def _refuse(constant: str):
    raise ValueError(f"{constant} is not a result")
