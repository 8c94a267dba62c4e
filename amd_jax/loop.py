"""The training loop, alone: DMD2's iteration order with TTUR, logs, samples, checkpoints, the final evaluation, the
non-finite guard, preemption, the next batch prefetched on a background thread, and an optional profiler window
(train.profile_steps, clu's Profile).

Metric names (TensorBoard and metrics.jsonl): train/<metric> for the step's metrics (steps.py), the skipped updates
and the learning rates (train/lr_student, train/lr_critic); perf/ for step_time_s, tflops_per_device and clu's
ReportProgress figures (steps_per_sec, uptime, eta_s); eval/<evaluator>/<metric> for evaluations
(amd_jax/evaluators.py).

    if step % ttur == 0:  state, x, r = generator_step(state, frozen, batch)   # student update
    else:                 x, r = sample_step(state, frozen, batch)             # samples only
    state = critic_step(state, frozen, batch, x, r)                             # fake teacher, every iteration
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import time

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils

from amd_jax import evaluators, outputs, writers
from amd_jax.clu_lib import periodic_actions
from amd_jax.errors import CheckpointError, NonFiniteError, OutputError, WorkdirBusyError
from amd_jax.session import Session
from amd_jax.steps import lr_schedule

log = logging.getLogger("amd_jax")


class Preempted:
    """SIGTERM (TPU preemption, GKE eviction): the loop saves a checkpoint and exits cleanly, on every process at once.

    One process: a Python SIGTERM handler sets `flag`. Several processes: JAX's preemption sync manager (started by
    jax.distributed.initialize) owns SIGTERM; a notice on ANY process makes all of them agree on the same stop step.
    """

    def __init__(self):
        self.flag = False
        self.multihost = jax.process_count() > 1

    def install(self):
        if self.multihost:
            return  # a Python handler would replace the sync manager's and break the agreement
        try:
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "flag", True))
        except ValueError:  # not in the main thread (e.g. some test runners)
            pass

    def reached(self, step: int) -> bool:
        """Call after every step (same step ids on all processes): True when this step must be saved and the run ended."""
        if self.multihost:
            self.flag = multihost_utils.reached_preemption_sync_point(step)
        return self.flag


class NonFiniteGuard:
    """Stops a run whose updates keep being skipped for a NaN/inf loss or gradient (steps.py skips them), and fails a
    run that ends with too many of them.

    `observe` reads the previous iteration's skip flags while the current one runs on the device (a one-step lag:
    no host synchronisation bubble) and raises NonFiniteError after `limit` consecutive iterations with a skipped
    update. The state never holds a skipped update, so every checkpoint written stays finite.
    It also counts, over the whole run (`counts`: those of the checkpoint resumed from, its meta's "updates"), the
    iterations and those with a skipped update; `final_check` refuses the result of a run where more than
    train.max_skipped_fraction of them were skipped. The flags are the step's replicated metrics: the counts and
    the decision are the same on every process."""

    def __init__(self, limit: int, config, counts: dict | None = None):
        self.limit, self.c = limit, config
        self.pending, self.consecutive, self.total = None, 0, 0
        self.iterations = int((counts or {}).get("iterations", 0))
        self.skipped_iterations = int((counts or {}).get("skipped_iterations", 0))
        self.last_step = None

    def observe(self, step: int, metrics: dict):
        previous, self.pending = self.pending, (step, [metrics[k] for k in ("skipped_generator", "skipped_critic")
                                                       if k in metrics])
        if previous is not None:
            self._count(*previous)
        self._check()

    def flush(self):
        self.settle()
        self._check()

    def settle(self):
        """Count the pending iteration now (it has run: e.g. before a checkpoint records the counts); a stop it
        makes due is raised at the next `observe` or `flush`, as without it."""
        if self.pending is not None:
            self._count(*self.pending)
            self.pending = None

    def counts(self) -> dict:
        """What a checkpoint's meta records ("updates"), after `settle`."""
        return {"iterations": self.iterations, "skipped_iterations": self.skipped_iterations}

    def _count(self, step: int, flags):
        skipped = int(sum(float(f) for f in flags))
        self.total += skipped
        self.iterations += 1
        self.skipped_iterations += bool(skipped)
        self.consecutive = self.consecutive + 1 if skipped else 0
        self.last_step = step

    def _check(self):
        if self.consecutive >= self.limit:
            raise NonFiniteError(
                f"{self.consecutive} consecutive iterations (up to step {self.last_step}) had a NaN/inf loss or "
                f"gradient; their updates were skipped and the run stops (train.max_nonfinite={self.limit}). The "
                f"checkpoints hold the last finite state. {self._knobs()}")

    def _knobs(self) -> str:
        o = self.c.optim
        return (f"Likely knobs: optim.student_lr={o.student_lr}, optim.critic_lr={o.critic_lr}, optim.grad_clip="
                f"{o.grad_clip}, optim.warmup_steps={o.warmup_steps}, dmd.guidance_scale={self.c.dmd.guidance_scale};"
                " lower the learning rates and resume with --config.resume.allow_changes=\"('optim',)\" (a resume "
                "refuses changed training knobs without it), or start a new --workdir.")

    def final_check(self):
        """At the end of the run (before the final evaluation): log the fraction of iterations with a skipped update;
        NonFiniteError when it is above train.max_skipped_fraction (the run is not a result: no eval.json)."""
        self.flush()
        n, k = self.iterations, self.skipped_iterations
        limit = self.c.train.max_skipped_fraction
        if not k:
            return
        fraction = k / max(n, 1)
        text = (f"{k} of {n} iterations ({100 * fraction:.1f}%) skipped their update for a NaN/inf loss or "
                "gradient")
        if fraction <= limit:
            log.warning("%s (train.max_skipped_fraction=%s).", text, limit)
            return
        raise NonFiniteError(
            f"{text}, more than train.max_skipped_fraction={limit}: the student did not train as configured, so "
            f"the run is not a result and no eval.json was written. The checkpoints hold the last finite state. "
            f"{self._knobs()}")


class Prefetcher:
    """The next iteration's batch, read and put on the mesh by a background thread while the current iteration runs.
    A batch is a pure function of its step, so prefetching changes no number."""

    def __init__(self, session: Session, first_step: int, first_batch, total_steps: int):
        self.session, self.total = session, total_steps
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self.pending = (first_step, _done(first_batch))

    def get(self, step: int):
        batch = self.pending[1].result() if self.pending[0] == step else self.session.batch(step)
        if step + 1 < self.total:
            self.pending = (step + 1, self.pool.submit(self.session.batch, step + 1))
        return batch

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _done(value) -> concurrent.futures.Future:
    future = concurrent.futures.Future()
    future.set_result(value)
    return future


class ProfileSteps(periodic_actions.Profile):
    """clu's Profile over the iterations [first, last) of `train.profile_steps=(first, last)` (() = off): a
    jax.profiler trace into WORKDIR/profile (TensorBoard's profile plugin). Called with the step about to run;
    `close` ends a trace the run stopped inside."""

    def __init__(self, steps, logdir):
        self.first, self.last = tuple(steps)
        super().__init__(logdir=logdir, num_profile_steps=self.last - self.first, profile_duration_ms=0,
                         first_profile=self.first, every_steps=None, every_secs=None)

    def _end_session(self, url):
        super()._end_session(url)
        log.info("profile of steps %s..%s written to %s", self.first, self.last, self._logdir)

    def close(self):
        if self._session_running:
            jax.profiler.stop_trace()
            self._end_session(None)


def learning_rates(c, state) -> dict[str, float]:
    """{'lr_student', 'lr_critic'}: the rate each optimizer applied at its latest update (optim.warmup_steps'
    schedule of steps.py at the optimizer's own update count, which a skipped update does not advance)."""
    out = {}
    for name, opt_state, peak in (("student", state.student_opt, c.optim.student_lr),
                                  ("critic", state.critic_opt, c.optim.critic_lr)):
        count = int(optax.tree_utils.tree_get(opt_state, "count", filtering=_schedule_count))
        out[f"lr_{name}"] = float(lr_schedule(c.optim, peak)(max(count - 1, 0)))
    return out


def _schedule_count(path, value) -> bool:
    return bool(path) and getattr(path[-1], "tuple_name", "") == "ScaleByScheduleState"


def train(session: Session, stop_after: int | None = None, lock=None):
    """Train from the newest checkpoint (or from scratch) to total_steps, or to `stop_after`; returns the state.

    `lock`: the workdir's lock (amd_jax/workdir_lock.py, taken by train.py), checked before every checkpoint.
    Writes outside checkpoints/ are guarded (amd_jax/outputs.py): the folders are probed first, and a write that
    fails mid-run ends the run with OutputError after the current state is saved as a checkpoint."""
    c, workdir = session.c, session.workdir
    with outputs.together():  # before the teacher is trained or anything compiled
        if jax.process_index() == 0:
            outputs.probe(outputs.run_folders(c, workdir), append=(workdir / "metrics.jsonl",))
        writer = writers.create_writer(workdir)
        if session.resume_step is None:
            writer.write_hparams(c.to_dict())
    teacher_dir = c.teacher.dir if "teacher" in c and c.teacher.dir else workdir
    stage = outputs.writing(teacher_dir, "the teacher or a first-use cache", only_write_errors=True)
    try:
        with outputs.together(), stage:  # the teacher (and reward) may be trained and saved here
            frozen = session.frozen()
    except OutputError as e:
        _close_quietly(writer)
        raise OutputError(f"{e}. Nothing was trained; make it writable (or free space there) and run again.") from e
    state = session.initial_state(frozen)
    start = int(jax.device_get(state.step))
    batch0 = session.batch(start)
    compiled, comp_s, flops = session.compile(frozen, state, batch0)  # announces each compilation
    log.info("Compiled in %s s; GFLOP per call %s", {k: round(v, 2) for k, v in comp_s.items()},
             {k: round(v / 1e9, 4) for k, v in flops.items()})
    gen = session.sampler(frozen)
    ttur = c.dmd.ttur
    registry = evaluators.registry(c)  # what is evaluated when: log.sample_every, eval.at_end, config.evals
    iter_flops = (flops["generator"] + (ttur - 1) * flops["sample"]) / ttur + flops["critic"]

    preempted = Preempted()
    preempted.install()
    guard = NonFiniteGuard(c.train.max_nonfinite, c, session.resume_meta.get("updates"))
    batches = Prefetcher(session, start, batch0, c.total_steps)
    prof_steps = tuple(c.train.get("profile_steps", ()))
    profiler = ProfileSteps(prof_steps, workdir / "profile") if prof_steps else None
    progress = writers.TrainProgress(c.total_steps, c.log.every)
    progress(start)  # the reference point of the first report's steps/s
    window, t_window = [], time.time()
    log.info("Training from step %d to %d (%s)", start, c.total_steps, _iteration(c))

    def meta(s):
        guard.settle()  # the checkpoint records the skipped updates up to its step
        return {"data_position": s, "config": c.to_dict(), "mesh": dict(session.mesh.shape),
                "updates": guard.counts()}

    step, saved = start, start
    try:
        while step < c.total_steps:
            if profiler is not None:
                profiler(step)
            batch = batches.get(step)
            if step % ttur == 0:
                state, x, r, gm = compiled["generator"](state, frozen, batch)
            else:
                (x, r), gm = compiled["sample"](state, frozen, batch), {}
            state, cm = compiled["critic"](state, frozen, batch, x, r)
            step += 1
            window.append({**gm, **cm})
            guard.observe(step, window[-1])

            if step % c.log.every == 0 or step == c.total_steps:
                metrics = _mean_metrics(window)  # waits for this step anyway: count its skips now too
                guard.flush()
                dt = (time.time() - t_window) / len(window)
                metrics.update(nonfinite_skipped=guard.total, **learning_rates(c, state))
                perf = {"step_time_s": dt, "tflops_per_device": iter_flops / dt / 1e12}  # cost analysis: per device
                progress(step)  # clu's ReportProgress: perf/steps_per_sec, perf/uptime, perf/eta_s
                with outputs.together():
                    writer.write_scalars(step, {**{f"train/{k}": v for k, v in metrics.items()},
                                                **{f"perf/{k}": v for k, v in perf.items()}, **progress.pop_scalars()})
                log.info("%s", writers.step_line(step, c.total_steps, progress.line(), metrics, guard.total))
                window, t_window = [], time.time()
            else:
                progress(step)
            due = [ev for ev in registry.values() if ev.due(step)]
            if due:
                with outputs.together():
                    for ev in due:
                        evaluators.run(ev, session, gen, state, writer, step)
            stop = preempted.reached(step)
            if step % c.checkpoint.every == 0 or step == c.total_steps or stop:
                with outputs.together(WorkdirBusyError):
                    if lock is not None:
                        lock.check()  # another run took the workdir over: it writes, this one stops
                t0 = time.time()
                session.ckpt.save(step, state, meta(step), force=True)
                saved = step
                log.info("checkpoint %d: save started in %.2f s (async=%s)", step, time.time() - t0,
                         c.checkpoint.async_save)
            if stop:
                log.warning("SIGTERM: saved step %d, exiting.", step)
                break
            if stop_after is not None and step >= stop_after:
                break
        guard.flush()
    except (NonFiniteError, WorkdirBusyError):
        session.ckpt.close()  # the saves already started finish writing; no new one is made
        _close_quietly(writer)
        raise
    except OutputError as e:  # a write outside checkpoints/ failed: keep the trained steps, then stop
        _close_quietly(writer)
        raise OutputError(f"{e}. {_save_after_failure(session, state, step, saved, meta)}") from e
    finally:
        if profiler is not None:
            profiler.close()
        batches.close()
    t0 = time.time()
    session.ckpt.wait()
    log.info("checkpoints finished writing (waited %.2f s)", time.time() - t0)
    try:
        if step == c.total_steps:
            try:
                guard.final_check()  # a run whose updates were mostly skipped is not a result
            except NonFiniteError:
                session.ckpt.close()
                _close_quietly(writer)
                raise
            with outputs.together():
                for ev in registry.values():
                    if ev.at_end:
                        evaluators.run(ev, session, gen, state, writer, step, final=True)
        with outputs.together():
            writer.flush()
            writer.close()
    except OutputError as e:
        _close_quietly(writer)
        session.ckpt.close()
        raise OutputError(f"{e}. Checkpoint {step} is saved: run the same command again once it is fixed (the "
                          "evaluation runs again; nothing is retrained).") from e
    session.ckpt.close()
    return state


def _save_after_failure(session: Session, state, step: int, saved: int, meta) -> str:
    """Save `state` at `step` unless that step is saved already; the sentence that says what is on disk."""
    if step == saved:
        try:
            session.ckpt.close()
        except CheckpointError as e:
            return f"The checkpoint of step {step} did not finish writing either: {e}"
        return (f"Checkpoint {step} is saved: fix the folder and run the same command again; training resumes "
                f"from step {step}.")
    try:
        session.ckpt.save(step, state, meta(step), force=True)
        session.ckpt.close()
    except CheckpointError as e:
        return f"Saving checkpoint {step} failed too: {e}"
    log.warning("Saved checkpoint %d after the failed write.", step)
    return (f"Saved checkpoint {step} first: fix the folder and run the same command again; training resumes from "
            f"step {step}.")


def _close_quietly(writer):
    """Close the TensorBoard writer after a failure (its own error, if any, is the one already reported)."""
    try:
        writer.close()
    except (OutputError, OSError):
        pass


def _iteration(c) -> str:
    """What one iteration runs, for the start line."""
    ttur = c.dmd.ttur
    student = "a student update" if ttur == 1 else f"a student update every {ttur} iterations"
    return f"{c.method}: {student} and a fake-teacher update per iteration, logged every {c.log.every}"


def _mean_metrics(window: list[dict]) -> dict[str, float]:
    host = jax.device_get(window)
    keys = sorted({k for m in host for k in m})
    return {k: float(np.mean([m[k] for m in host if k in m])) for k in keys}
