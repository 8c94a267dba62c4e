"""The project's errors, in one place. Each message names the problem and the fix; entry points print it and exit
non-zero without a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input that cannot run; raised before anything expensive (compiling, training) starts."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written (read-only or full folder, non-finite state) or read back (damaged files,
    checksum mismatch); the message names the step, the folder and what was kept."""
