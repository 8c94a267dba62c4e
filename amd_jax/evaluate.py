r"""Offline evaluation of a training run's checkpoints, decoupled from training (DMD2's evaluator style).

    python -m amd_jax.evaluate --config=configs/NAME.py --workdir=DIR [--step=N] [--watch] [--num_samples=N] \
        [--repeats=K] [--results_dir=FOLDER]

Restores the student of checkpoint N (default: the newest) from DIR onto this machine's mesh, generates
`eval.num_samples` samples for the experiment's evaluation conditions, and writes DIR/eval/eval_<step>.json, the
experiment's images (DIR/eval/<name>_<step>.png) and DIR/eval/results.md, a table over every evaluated step.
With student.ema_decay > 0 the student's EMA is evaluated too, on the same seed: ema_<metric> keys in the same
eval_<step>.json (and table), images DIR/eval/<name>_ema_<step>.png.
`--watch` keeps polling DIR for new checkpoints and evaluates each once, so training never waits for evaluation;
it stops after the checkpoint of `total_steps` (or after --watch_timeout seconds without a new one).
The run is only read: its checkpoints/ may be read-only, and the training run's lock is not needed (--watch
follows a run that trains). Results go to DIR/eval, or to `--results_dir=FOLDER` (a read-only run); only that folder is
probed for writing, at start-up.
`--repeats=K` (K >= 2) also measures the sampling noise of the metrics themselves: the student is evaluated on K
disjoint sample sets of eval.num_samples each (noise seeds 777, 778, ...; the first is the one eval_<step>.json
holds) and DIR/eval/noise_<step>.json gets, per metric, the K values, their mean and standard deviation (ddof 1).
Compiled executables are kept in the persistent compilation cache, as for train (amd_jax/cli.py
`use_compilation_cache`: ~/.cache/amd_jax/jax, or JAX_COMPILATION_CACHE_DIR; an empty value turns it off).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import numpy as np

os.environ.setdefault("USE_TF", "0")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from amd_jax import cli, paths  # noqa: E402
from amd_jax.evaluators import FINAL_SEED  # noqa: E402
from amd_jax.parallel import distributed  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir (local or gs://).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the newest).")
_WATCH = flags.DEFINE_bool("watch", False, "Evaluate every new checkpoint as training writes it.")
_POLL = flags.DEFINE_integer("poll_seconds", 60, "Seconds between polls in --watch mode.")
_WATCH_TIMEOUT = flags.DEFINE_integer("watch_timeout", 6 * 3600, "Stop watching after this long without news.")
_NUM = flags.DEFINE_integer("num_samples", None, "Override eval.num_samples.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Disjoint sample sets per checkpoint; >= 2 writes noise_<step>.json.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Where the results go (default DIR/eval): a read-only run is evaluated "
                           "into another folder.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()

log = logging.getLogger("amd_jax")


class Evaluator:
    """The checkpoints of one training run, evaluated on this machine's mesh. Loads the reward model (for the
    reward and zone statistics) and the task's evaluators, never the teacher."""

    def __init__(self, config, workdir: str, out: str | None = None):
        """`out`: where the results go (default DIR/eval). The run itself is only read (its checkpoints/ may be
        read-only); `out` is probed at once (OutputError when it cannot be written)."""
        import jax
        from etils import epath

        from amd_jax import outputs
        from amd_jax.session import Session

        self.session = Session(config, workdir, training=False)
        self.out = epath.Path(out) if out else epath.Path(workdir) / "eval"
        with outputs.together():
            if jax.process_index() == 0:
                outputs.probe({"the evaluation": self.out},
                              fix="Make it writable (or free space there), or give --results_dir=FOLDER.")
        self.gen = self.session.sampler(self.session.frozen(teacher=False))

    def steps_done(self) -> set[int]:
        """Steps with a results file eval_<step>.json (not the .failed.json of a refused evaluation)."""
        return {int(p.stem[5:]) for p in self._results()}

    def _results(self):
        return sorted(p for p in self.out.glob("eval_*.json") if p.stem[5:].isdigit()) if self.out.exists() else []

    def checkpoint_steps(self) -> list[int]:
        return self.session.ckpt.steps()

    def evaluate(self, step: int) -> dict:
        """eval_<step>.json with the student's metrics and, with student.ema_decay > 0, its EMA's as ema_<metric>
        keys; the images as <name>_<step>.png and <name>_ema_<step>.png."""
        from amd_jax import writers

        s, c = self.session, self.session.c
        t0 = time.time()
        metrics = self._evaluate_params(s.restore_student(step), step, "")
        if s.ema:
            metrics.update(self._evaluate_params(s.restore_student_ema(step), step, "ema"))
        metrics.update(step=step, method=c.method, seed=c.seed)
        with self._writing():
            writers.save_eval_json(self.out / f"eval_{step:07d}.json", metrics)
            self.write_table()
        log.info("evaluated step %d in %.1f s: %s", step, time.time() - t0, json.dumps(metrics, default=str))
        return metrics

    def noise(self, step: int, repeats: int) -> dict:
        """The sampling noise of the metrics at this checkpoint: the student on `repeats` disjoint sample sets of
        eval.num_samples each (seeds FINAL_SEED, FINAL_SEED + 1, ...); writes and returns noise_<step>.json."""
        from amd_jax import writers

        if repeats < 2:
            raise ValueError(f"--repeats={repeats}: the spread needs at least 2 sample sets.")
        params = self.session.restore_student(step)
        runs = [self._evaluate_params(params, step, "", seed=FINAL_SEED + k, images=False) for k in range(repeats)]
        keys = [k for k, v in runs[0].items() if writers.is_number(v) and k != "generate_seconds"]
        per_metric = {}
        for k in keys:
            v = np.asarray([r[k] for r in runs], np.float64)
            per_metric[k] = {"values": v.tolist(), "mean": float(v.mean()), "std": float(v.std(ddof=1))}
        out = {"step": step, "repeats": repeats, "num_samples": self.session.c.eval.num_samples,
               "seeds": [FINAL_SEED + k for k in range(repeats)], "metrics": per_metric}
        with self._writing():
            writers.save_eval_json(self.out / f"noise_{step:07d}.json", out)
        log.info("sampling noise at step %d over %d sets: %s", step, repeats,
                 ", ".join(f"{k} {m['mean']:.4g} +- {m['std']:.2g}" for k, m in per_metric.items()))
        return out

    def _evaluate_params(self, params, step: int, tag: str, seed: int = None, images: bool = True) -> dict:
        """The task's metrics of `params` on eval.num_samples samples from noise `seed` (default FINAL_SEED; keys
        prefixed '<tag>_' for tag 'ema'), with the seconds spent generating; writes the images when `images`."""
        from amd_jax import writers

        s, c = self.session, self.session.c
        t0 = time.time()
        x, cond, r, z = s.generate(self.gen, params, c.eval.num_samples, seed=FINAL_SEED if seed is None else seed)
        t_gen = time.time() - t0
        suffix = f"_{tag}" if tag else ""
        save_dir = self.out / f"images{suffix}_{step:07d}" if c.eval.get("save_images") else None
        metrics, pictures = s.task.evaluate(x, cond, r, z, title=f"{c.method} step {step} {tag}".strip(),
                                            save_dir=save_dir if images else None)
        metrics["generate_seconds"] = round(t_gen, 2)
        for name, img in (pictures.items() if images else ()):
            with self._writing():
                writers.save_png(self.out / f"{name}{suffix}_{step:07d}.png", img)
        return {f"{tag}_{k}" if tag else k: v for k, v in metrics.items()}

    def _writing(self):
        """Every write of the evaluation: a refusal is one line (OutputError) naming the folder and the cause, and
        all processes stop together."""
        from amd_jax import outputs

        return outputs.guarded(self.out, "the evaluation")

    def write_table(self):
        from amd_jax import writers

        rows = [json.loads(p.read_text()) for p in self._results()]
        keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k != "step"})
        lines = ["| step | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        lines += [f"| {r['step']} | " + " | ".join(f"{r.get(k, float('nan')):.4g}" for k in keys) + " |" for r in rows]
        if writers.jax.process_index() == 0:
            (self.out / "results.md").write_text("\n".join(lines) + "\n")


def main(argv):
    del argv
    from amd_jax.writers import setup_logging

    setup_logging()
    cli.use_compilation_cache()
    distributed.initialize_from_flags(flags.FLAGS)
    from amd_jax.errors import CheckpointError, ConfigError, NonFiniteError, OutputError

    config = _CONFIG.value
    if _REPEATS.value < 1 or (_REPEATS.value > 1 and _WATCH.value):
        sys.exit(f"--repeats={_REPEATS.value}: give 1 (no noise estimate) or K >= 2 with one --step, not --watch.")
    if _NUM.value:
        with config.unlocked():
            config.eval.num_samples = _NUM.value
    try:
        workdir = cli.prepare(config, _WORKDIR.value)
        distributed.check_consistent(config.to_json_best_effort())
        ev = Evaluator(config, workdir, paths.absolute(_RESULTS_DIR.value) if _RESULTS_DIR.value else None)
    except (ConfigError, distributed.ConsistencyError) as e:
        sys.exit(f"Config error: {e}")
    except CheckpointError as e:
        sys.exit(f"Checkpoint error: {e}")
    except OutputError as e:  # DIR/eval (or --results_dir) cannot be written
        sys.exit(f"Write error: {e}")
    try:
        _evaluate_steps(ev, config)
    except NonFiniteError as e:
        sys.exit(f"Evaluation failed: {e}")
    except OutputError as e:
        sys.exit(f"Write error: {e}")
    except CheckpointError as e:  # the requested step is damaged
        sys.exit(f"Checkpoint error: {e}")


def _evaluate_steps(ev: Evaluator, config):
    """--step (default the newest), or every new checkpoint with --watch."""
    if not _WATCH.value:
        steps = ev.checkpoint_steps()
        step = _STEP.value if _STEP.value is not None else (steps[-1] if steps else None)
        if step is None or step not in steps:
            sys.exit(f"No checkpoint {'at step %s ' % step if step is not None else ''}in {_WORKDIR.value}; "
                     f"available: {steps or 'none'}.")
        ev.evaluate(step)
        if _REPEATS.value > 1:
            ev.noise(step, _REPEATS.value)
        return
    last_news = time.time()
    while True:
        todo = [s for s in ev.checkpoint_steps() if s not in ev.steps_done()]
        for s in todo:
            ev.evaluate(s)
            last_news = time.time()
        if config.total_steps in ev.steps_done():
            log.info("evaluated the final checkpoint (step %d); done.", config.total_steps)
            return
        if time.time() - last_news > _WATCH_TIMEOUT.value:
            log.info("no new checkpoint for %d s; stopping.", _WATCH_TIMEOUT.value)
            return
        time.sleep(_POLL.value)


if __name__ == "__main__":
    cli.run(main)
