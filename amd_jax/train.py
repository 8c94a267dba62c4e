"""Entry point: python -m amd_jax.train --config=configs/NAME.py --workdir=DIR [--config.key=value ...]

Resumes by itself from the newest checkpoint in DIR. Unknown --config keys are refused by ml_collections.
One run per workdir: DIR/.lock is taken before anything in DIR is written or deleted (amd_jax/workdir_lock.py); a
second run is refused in one line naming the holder. Every folder the run writes is probed at start-up, and a write
that fails mid-run ends the run in one line after the current step is saved (amd_jax/outputs.py).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("USE_TF", "0")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from amd_jax import cli  # noqa: E402
from amd_jax.parallel import distributed  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs, samples and eval.json go (local or gs://).")
_STOP_AFTER = flags.DEFINE_integer("stop_after", None, "Leave the loop after this step (testing resumption).")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv):
    del argv
    from amd_jax.writers import setup_logging

    setup_logging()
    distributed.initialize_from_flags(flags.FLAGS)  # before any other JAX call
    from amd_jax.errors import (CheckpointError, ConfigError, DamagedFileError, NonFiniteError, OutputError,
                                WorkdirBusyError)
    from amd_jax.loop import train
    from amd_jax.session import Session
    from amd_jax.workdir_lock import acquire_for_job

    lock = None
    try:
        try:
            workdir = cli.prepare(_CONFIG.value, _WORKDIR.value)
            distributed.check_consistent(_CONFIG.value.to_json_best_effort())
            lock = acquire_for_job(workdir)  # one run per workdir: before anything there is written or deleted
            session = Session(_CONFIG.value, workdir)
        except (ConfigError, distributed.ConsistencyError) as e:
            sys.exit(f"Config error: {e}")
        except WorkdirBusyError as e:  # another run holds the workdir
            sys.exit(f"Workdir error: {e}")
        except OutputError as e:  # the workdir cannot be written
            sys.exit(f"Write error: {e}")
        except CheckpointError as e:  # checkpoints/ cannot be written
            sys.exit(f"Checkpoint error: {e}")
        try:
            train(session, stop_after=_STOP_AFTER.value, lock=lock)
        except NonFiniteError as e:
            sys.exit(f"Run stopped: {e}")
        except CheckpointError as e:  # a save failed or was refused, or no checkpoint restores
            sys.exit(f"Checkpoint error: {e}")
        except OutputError as e:  # samples, metrics, TensorBoard, eval.json, the teacher or a cache not written
            sys.exit(f"Write error: {e}")
        except WorkdirBusyError as e:  # another run took the lock over (stale heartbeat)
            sys.exit(f"Workdir error: {e}")
        except (ConfigError, DamagedFileError) as e:  # found while loading the teacher, the reward or the data
            sys.exit(f"Input error: {e}")
    finally:
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    cli.run(main)
