"""Tasks: everything that differs between toy2d, the handwritten-digit benchmarks and SDXL, behind `Task`.

`build(config)` imports only the folder of `config.experiment`; nothing outside amd_jax/tasks names a task. The
session (amd_jax/session.py) turns a Task into a mesh, a sharded state and compiled steps; the task says what the
networks are, where the data comes from, how the frozen teacher and reward are obtained (loaded, or trained on first
use), and how samples are evaluated.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from amd_jax.conditioning import Condition
from amd_jax.errors import ConfigError
from amd_jax.models.common.bundle import Models

# config.experiment -> the module whose build(config) returns its Task
_TASKS = {
    "toy2d": "amd_jax.tasks.toy2d",
    "digits": "amd_jax.tasks.digits",  # scikit-learn's 8x8 load_digits
    "mnist": "amd_jax.tasks.digits",  # MNIST 28x28: the same task on other data
    "sdxl": "amd_jax.tasks.sdxl",
    "imagenet": "amd_jax.tasks.imagenet",  # SiT on ImageNet 256 latents
    "zones2d": "amd_jax.tasks.zones2d",  # toy2d with a Forbidden Zone by construction
    "moving_mnist": "amd_jax.tasks.moving_mnist",  # Moving MNIST videos, a Forbidden Zone of motion
    "wan": "amd_jax.tasks.wan",  # Wan2.1 text-to-video, sequence-parallel over a context axis
}


@dataclasses.dataclass(frozen=True)
class Task:
    models: Models  # student, critic and teacher denoisers, GAN head, reward function (no weights)
    data: Any  # global_batch(step, batch_size) -> {'cond': ..., 'real': ...}, a pure function of (seed, step)
    teacher: Callable[[], Any]  # the frozen teacher's parameters (host): loaded, or trained on first use
    reward: Callable[[], Any]  # the frozen reward's parameters (host; None when it has none)
    eval_conds: Callable[[int], Any]  # n -> host cond pytree of the n evaluation samples
    # (x, cond, rewards | None, zone | None, title='', save_dir=None) -> (metrics, images); save_dir: also write
    # every sample as an image file, where the task has them (SDXL)
    evaluate: Callable[..., tuple[dict, dict]]
    # conditioning the session computes on the mesh from what the batch carries (SDXL: token ids -> text
    # embeddings), for the training batches and eval_conds alike; None: the host batch already holds it
    condition: Condition | None = None
    # The plan (amd_jax/plan), from the architecture alone: () -> {'teacher': ..., 'reward': ... | None} as
    # ShapeDtypeStructs in the dtypes the steps receive, and global batch size -> the batch's ShapeDtypeStructs.
    abstract_frozen: Callable[[], dict] | None = None
    abstract_batch: Callable[[int], Any] | None = None


def build(config, mesh=None, abstract: bool = False) -> Task:
    """The task of `config.experiment`. It does not check the config: the caller has (amd_jax.config.validate,
    which the Session runs first, calls `check`). `mesh` (the session's) tells a process-sharded data pipeline
    which rows of a global batch this process holds; without it, every row. The task's data puts each condition on
    `amd.group_size` consecutive rows (amd_jax/data/groups.py). `abstract=True` (the plan): a task that declares
    `ABSTRACT = True` builds its networks and abstract_* hooks without reading any weight or data file."""
    module = _module(config)
    return module.build(config, mesh, abstract=True) if abstract else module.build(config, mesh)


def check(config, abstract: bool = False) -> None:
    """The task's own config checks, before anything is built: amd_jax.config.validate calls it after the generic
    and evaluator checks (once per Session). A task module may define `check(config)` (an ABSTRACT one
    `check(config, abstract=False)`), raising ConfigError with the fix."""
    module = _module(config)
    if abstract and not getattr(module, "ABSTRACT", False):
        raise ConfigError(f"experiment={config.experiment!r} cannot be planned without its files (its task does "
                          "not declare ABSTRACT); the TPU plan supports experiment='sdxl', 'imagenet' and 'wan'.")
    _check_groups(module, config)
    if hasattr(module, "check") and abstract:
        module.check(config, abstract=True)
    elif hasattr(module, "check"):
        module.check(config)


def resume_free_keys(experiment: str) -> tuple[str, ...]:
    """The config keys (or blocks) a checkpoint of `experiment` may be resumed with other values of, beside the
    generic ones of amd_jax/config/resume.py: its module's `RESUME_FREE` (e.g. SDXL's model.unet_remat); () for a
    task without them or a name that is no task (check_resume then reports the experiment's change itself)."""
    if experiment not in _TASKS:
        return ()
    return tuple(getattr(importlib.import_module(_TASKS[experiment]), "RESUME_FREE", ()))


def memory_knobs(config) -> list[str]:
    """The task's own knobs that lower activation memory, as advice lines for the TPU plan (its module's
    `memory_knobs(config)`, e.g. SDXL's activation checkpointing); [] for a task without them."""
    module = _module(config)
    return list(module.memory_knobs(config)) if hasattr(module, "memory_knobs") else []


def _module(config):
    """The module of `config.experiment` (only that task's folder is imported)."""
    name = config.experiment
    if name not in _TASKS:
        raise ConfigError(f"experiment={name!r} is not a task: choose one of {sorted(_TASKS)}.")
    return importlib.import_module(_TASKS[name])


def _check_groups(module, config) -> None:
    """Refuse amd.group_size = K > 1, before the task builds anything, when its data pipeline cannot put K rows of
    one condition next to each other (a task module declares `GROUPED_DATA = True` when it can)."""
    k = config.amd.group_size
    if k > 1 and not getattr(module, "GROUPED_DATA", False):
        raise ConfigError(
            f"amd.group_size={k}: the data pipeline of experiment={config.experiment!r} cannot put {k} samples of "
            "one condition on consecutive rows, so the group advantage would normalise over unrelated samples. "
            "Set --config.amd.group_size=1 (the whole global batch is one group).")
