"""The configuration: defaults, checks, the resume policy and file loading.

  defaults.py  `base()` (every experiment's defaults; a config file in configs/ starts from it and overrides) and
               `teacher()` (the teacher block of the small experiments)
  checks.py    `validate`: every check that needs no compilation, once, before anything is built: `check_knobs`
               (the generic knobs and the evaluators), then the task's own (amd_jax.tasks.check); the helpers
               `need`, `is_int`, `is_real`
  resume.py    `check_resume`: refuse to resume a checkpoint with a config that would train another experiment;
               `check_experiment`: the same for `experiment` alone, before the task is built
  loading.py   `load`: a configs/NAME.py file with dotted overrides
"""

from amd_jax.config.checks import check_knobs, flatten, is_int, is_real, need, sample_count_notes, validate
from amd_jax.config.defaults import base, teacher
from amd_jax.config.loading import load
from amd_jax.config.resume import RESUME_FREE, check_experiment, check_resume

__all__ = ["RESUME_FREE", "base", "check_experiment", "check_knobs", "check_resume", "flatten", "is_int", "is_real",
           "load", "need", "sample_count_notes", "teacher", "validate"]
