"""Entry point: python -m amd_jax.train --config=configs/NAME.py --workdir=DIR [--config.key=value ...]

Resumes by itself from the newest checkpoint in DIR. Unknown --config keys are refused by ml_collections;
`--print_config` prints every key of the resolved config with its value and exits (DIR untouched, not needed).
A finished run (newest checkpoint at total_steps, the at-end results valid) exits at once, naming its results; the
resolved config of each start is written to DIR/config.json (amd_jax/run_files.py). Compiled steps are kept in the
persistent compilation cache (amd_jax/cli.py `use_compilation_cache`: ~/.cache/amd_jax/jax, or
JAX_COMPILATION_CACHE_DIR; empty turns it off).
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
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "Print the resolved config, every key as --config.KEY=VALUE "
                                  "takes it, and exit without touching --workdir (which is then not needed).")
flags.mark_flags_as_required(["config"])
distributed.define_flags()


def main(argv):
    del argv
    from amd_jax.writers import setup_logging

    if _PRINT_CONFIG.value:
        try:
            print("\n".join(cli.config_lines(_CONFIG.value)), flush=True)
        except BrokenPipeError:  # `--print_config | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if _WORKDIR.value is None:
        sys.exit("Flag error: --workdir=DIR is required (the folder the run writes into), unless --print_config.")
    setup_logging()
    cli.use_compilation_cache()
    distributed.initialize_from_flags(flags.FLAGS)  # before any other JAX call
    from amd_jax.errors import (CheckpointError, ConfigError, DamagedFileError, NonFiniteError, OutputError,
                                WorkdirBusyError)
    from amd_jax import outputs, run_files
    from amd_jax.loop import train
    from amd_jax.session import Session
    from amd_jax.workdir_lock import acquire_for_job

    lock = None
    try:
        try:
            workdir = cli.prepare(_CONFIG.value, _WORKDIR.value)
            distributed.check_consistent(_CONFIG.value.to_json_best_effort())
            if _finished(run_files.finished(_CONFIG.value, workdir), workdir):
                return  # nothing to train or evaluate: no lock, no model, no compilation
            lock = acquire_for_job(workdir)  # one run per workdir: before anything there is written or deleted
            session = Session(_CONFIG.value, workdir)
            with outputs.guarded(workdir, "the resolved config"):
                run_files.write_config(session.c, workdir, session.resume_step)
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


def _finished(results, workdir) -> bool:
    """True when `results` (run_files.finished's answer) says the run is done, agreed by every process (they read
    the same files, but storage may answer them differently); then the one line that says so."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    done = results is not None
    if jax.process_count() > 1:
        done = bool(multihost_utils.broadcast_one_to_all(np.int32(done)))
    if done and distributed.is_main_process():
        where = ", ".join(str(p) for p in results or ()) or f"the checkpoints in {workdir}/checkpoints (no at-end evaluation)"
        print(f"Training is already finished (newest checkpoint at total_steps); results: {where}. Nothing to do: "
              "raise --config.total_steps to train on.", flush=True)
    return done


if __name__ == "__main__":
    cli.run(main)
