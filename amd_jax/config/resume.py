"""The resume policy: `check_resume` refuses to resume a checkpoint with a config that would train a different
experiment, or when nothing is left to train.

Which keys may change is said in two places: RESUME_FREE below (the keys every task shares), and a task module's own
`RESUME_FREE` tuple (amd_jax.tasks.resume_free_keys; SDXL's UNet remat and attention kernel).
"""

from __future__ import annotations

import json
import logging

from amd_jax.config.checks import flatten, need
from amd_jax.paths import is_path_key

log = logging.getLogger(__name__)

# Keys whose value may differ between a checkpoint and the run resuming it: they do not change what is trained.
# A task adds its own (its module's RESUME_FREE, e.g. SDXL's model.unet_remat and model.unet_attention).
RESUME_FREE = (
    "total_steps",  # extending a finished run is normal
    "log",  # what is logged, how often
    "eval",  # what is evaluated (samples, evaluators' caches), not what is trained
    "evals",  # the evaluators and their cadence
    "checkpoint",  # how often, how many kept, async or not
    "mesh",  # the layout: restoring onto another mesh is a feature (tests/test_restore_mesh.py)
    "sharding",
    "reward.monitor",  # dmd2 only logs rewards with it: stop-gradient, the updates are the same
    "reward.chunks",  # how the same rewards are computed (memory), not what they are
    "teacher.train_if_missing",  # what to do without a teacher; a resumed run's teacher exists
    "train.max_nonfinite",  # when to give up on a diverging run, not what an update does
    "train.max_skipped_fraction",  # when a finished run's result is refused, not what an update does
    "train.profile_steps",  # what is traced, not what is trained
    "train.microbatches",  # the same update computed in pieces (memory), up to float rounding
    "resume",  # this check's own setting
)


# Keys added after checkpoints were written -> the value that reproduces the code before them. A saved (or current)
# config without such a key ran with this value, so check_resume reads the key's absence as it.
_ADDED_DEFAULTS = {
    "dmd.decoupled_normalizer": False,
    "dmd.ca_t_min": -1.0,
    "dmd.ca_t_max": -1.0,
    "student.ema_decay": 0.0,  # compared (not RESUME_FREE): it changes the state and what eval.json's ema_* mean
    "reward.latent_frames": 0,  # Wan: the reward decoded every latent frame
}


def _under(key: str, blocks) -> bool:
    """`key` is one of `blocks` or lies below one (dotted prefixes)."""
    return any(key == b or key.startswith(b + ".") for b in blocks)


def check_resume(saved: dict, current: dict, step: int) -> None:
    """Refuse to resume the checkpoint at `step` (written with config `saved`, its meta["config"]) with the config
    `current` (config.to_dict()) when that would train another experiment, or when nothing is left to train.

    Compared: every key except the RESUME_FREE ones (total_steps, log.*, eval.*, evals.*, checkpoint.*, mesh.*,
    sharding.*, reward.monitor, teacher.train_if_missing, train.max_nonfinite, train.profile_steps, resume.*), those
    the task declares (amd_jax.tasks.resume_free_keys of the saved and the current experiment) and the
    path-valued keys (paths.is_path_key: teacher.dir, data.path, model.path, ... may be moved, and are spelled
    relative or absolute).
    All the others (method, seed, experiment, schedule, student, model, data, dmd, amd, gan, optim, reward.name,
    teacher.*) set the updates, the data stream or what eval.json is labelled with; when the checkpoint's state has
    the same shapes, a change would silently continue a different experiment (student.ema_decay: a changed decay
    would report an EMA that mixes two averages under one name). A key present on one side only is a difference (a
    knob added by newer code), except the _ADDED_DEFAULTS keys, whose absence means the value the older code ran.
    `current`'s resume.allow_changes lists keys or blocks (e.g. 'optim') changed on purpose. Then: a checkpoint
    past total_steps is refused; at total_steps the run is finished (logged).
    """
    old, new = ({**_ADDED_DEFAULTS, **flatten(_json(d))} for d in (saved, current))
    free = RESUME_FREE + _task_resume_free(saved, current)
    changed = _semantic_changes(old, new, tuple(new.get("resume.allow_changes") or ()), free)
    need(not changed, f"The checkpoint at step {step} was trained with other values of {len(changed)} "
                      "training-semantics key(s):\n  "
                      + "\n  ".join(f"{k}: {old.get(k, _ABSENT)!r} -> {new.get(k, _ABSENT)!r}" for k in changed)
                      + "\nResuming would silently continue a different experiment. Use a new --workdir, or the "
                      "checkpoint's values; to change them on purpose, add --config.resume.allow_changes=\"("
                      + " ".join(f"{k!r}," for k in changed) + ")\". Nothing was changed in the checkpoints.")
    total = current["total_steps"]
    need(step <= total, f"The checkpoint is at step {step} > total_steps={total}: nothing to train. Raise "
                        f"--config.total_steps above {step} to continue this run, or use a new --workdir.")
    if step == total:
        log.info("The checkpoint is at step %d = total_steps: training is already finished, no step will run "
                 "(the at-end evaluation runs when its results are missing or invalid, or eval / evals changed).", step)


_ABSENT = "<absent>"


def check_experiment(found: tuple[int, dict] | None, current: dict, workdir) -> None:
    """Refuse, before the task is built, a config whose `experiment` differs from the newest checkpoint's in
    `workdir` (`found`: checkpoint.newest_config's (step, saved config), None without checkpoints): another task's
    config would not build from this one, or would continue a different experiment. resume.allow_changes may list
    'experiment'."""
    if found is None:
        return
    step, saved = found
    old, new = saved.get("experiment"), current.get("experiment")
    allowed = tuple((current.get("resume") or {}).get("allow_changes") or ())
    need(old == new or "experiment" in allowed,
         f"The checkpoints in {workdir} were trained with experiment={old!r} (newest: step {step}); this config runs "
         f"experiment={new!r}. Resuming would continue another experiment: use a new --workdir, or the config the "
         f"checkpoints were made with (their meta JSON holds it).")


def _task_resume_free(saved: dict, current: dict) -> tuple:
    """The resume-free keys the task declares, of the saved config's experiment and of the current one's (they are
    the same experiment, or `experiment` itself is a refused change)."""
    from amd_jax import tasks  # the task module is imported by name; nothing there imports the config package

    names = dict.fromkeys(d.get("experiment", "") for d in (saved, current))
    return tuple(k for name in names for k in tasks.resume_free_keys(name))


def _semantic_changes(old: dict, new: dict, allowed: tuple, free: tuple) -> list[str]:
    """The sorted flat keys whose values differ, leaving out the `free` (resume-free), path-valued and `allowed`
    keys."""
    unknown = [a for a in allowed if not any(_under(k, (a,)) for k in {*old, *new})]
    need(not unknown, f"resume.allow_changes={allowed}: {unknown} name no config key. Give dotted keys or blocks, "
                      "e.g. --config.resume.allow_changes=\"('optim.student_lr', 'amd')\".")
    return [k for k in sorted({*old, *new}) if old.get(k, _ABSENT) != new.get(k, _ABSENT)
            and not _under(k, free + allowed) and not is_path_key(k)]


def _json(d: dict) -> dict:
    """As the checkpoint's meta JSON stores it (tuples become lists), so that saved and current compare equal."""
    return json.loads(json.dumps(d, default=str))

