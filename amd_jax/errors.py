"""The project's errors, in one place. Each message names the problem and the fix; entry points print it and exit
non-zero without a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input that cannot run; raised before anything expensive (compiling, training) starts."""


class NonFiniteError(RuntimeError):
    """Training or evaluation produced NaN/inf: the run stops (non-zero exit) and keeps its newest finite checkpoint."""


class DamagedFileError(ValueError):
    """A file that exists but cannot be used: truncated, corrupted, or missing the keys or shapes its reader needs.
    First-use caches catch it and rebuild (amd_jax/caches.py); files the user provides reach the user with it."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written (read-only or full folder, non-finite state) or read back (damaged files,
    checksum mismatch); the message names the step, the folder and what was kept."""


class OutputError(RuntimeError):
    """A file of the run's outputs outside checkpoints/ (samples, metrics.jsonl, TensorBoard, eval.json, the teacher,
    first-use caches) cannot be written: the message names the folder, the OS cause and what was saved
    (amd_jax/outputs.py)."""


class WorkdirBusyError(RuntimeError):
    """Another training run holds the workdir's lock (amd_jax/workdir_lock.py): the message names it (host, pid,
    start time) and nothing in the workdir was touched."""
