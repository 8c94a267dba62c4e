"""The training loop: abstract state first, checks before compiling, sharded jit steps, Orbax, logs, samples, eval.

Order of work (maxdiffusion's abstract-state-first): validate the config -> abstract state (eval_shape) and its
shardings -> refuse an incompatible checkpoint -> frozen teacher/reward -> restore or jit-init the state into its
shardings -> AOT-compile the steps (compile time logged apart) -> loop.
"""

from __future__ import annotations

import logging
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from amd_jax import checkpoint as ckpt_lib
from amd_jax import experiments, writers
from amd_jax.config_base import check_resume, validate
from amd_jax.errors import NonFiniteError
from amd_jax.method import group_advantage, sample, zone_mask
from amd_jax.parallel import mesh as mesh_lib
from amd_jax.parallel.sharding import tree_shardings
from amd_jax.steps import Steps

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
    """Stops a run whose updates keep being skipped for a NaN/inf loss or gradient (steps.py skips them).

    `observe` reads the previous iteration's skip flags while the current one runs on the device (a one-step lag:
    no host synchronisation bubble) and raises NonFiniteError after `limit` consecutive iterations with a skipped
    update. The state never holds a skipped update, so every checkpoint written stays finite."""

    def __init__(self, limit: int, config):
        self.limit, self.c = limit, config
        self.pending, self.consecutive, self.total = None, 0, 0

    def observe(self, step: int, metrics: dict):
        previous, self.pending = self.pending, (step, [metrics[k] for k in ("skipped_generator", "skipped_critic")
                                                       if k in metrics])
        if previous is not None:
            self._count(*previous)

    def flush(self):
        if self.pending is not None:
            self._count(*self.pending)
            self.pending = None

    def _count(self, step: int, flags):
        skipped = int(sum(float(f) for f in flags))
        self.total += skipped
        self.consecutive = self.consecutive + 1 if skipped else 0
        if self.consecutive >= self.limit:
            o = self.c.optim
            raise NonFiniteError(
                f"{self.consecutive} consecutive iterations (up to step {step}) had a NaN/inf loss or gradient; their "
                f"updates were skipped and the run stops (train.max_nonfinite={self.limit}). The checkpoints hold "
                f"the last finite state. Likely knobs: optim.student_lr={o.student_lr}, optim.critic_lr="
                f"{o.critic_lr}, optim.grad_clip={o.grad_clip}, optim.warmup_steps={o.warmup_steps}, "
                f"dmd.guidance_scale={self.c.dmd.guidance_scale}; lower the learning rates and resume with "
                "--config.resume.allow_changes=\"('optim',)\" (a resume refuses changed training knobs without it), "
                "or start a new --workdir.")


def _put_batch(host: dict, mesh):
    """Host-global numpy pytree -> global jax arrays sharded over the batch axes.

    Every process computes the whole global batch (a pure function of (seed, step)) and gives each of ITS devices
    exactly the rows the batch sharding assigns to that device, whatever the device order of the mesh."""

    def one(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, mesh_lib.batch_sharding(mesh, a.ndim), lambda idx: a[idx])

    return jax.tree_util.tree_map(one, host)


def _cost_flops(compiled) -> float:
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0))
    except Exception:  # cost analysis is best-effort on some backends
        return 0.0


class Trainer:
    def __init__(self, config, workdir: str, devices=None):
        self.c, self.workdir = config, epath.Path(workdir)
        devices = jax.devices() if devices is None else list(devices)
        validate(config, len(devices), jax.process_count())  # before anything expensive
        if "teacher" in config and not config.teacher.dir:
            config.teacher.dir = str(self.workdir / "teacher")
        self.exp = experiments.get(config.experiment)
        self.models = self.exp.build(config)
        self.mesh = mesh_lib.make_mesh(config.mesh.axes, config.mesh.shape, devices)
        self.steps = Steps(config, self.models)
        rules, min_size = tuple(config.sharding.rules), config.sharding.fsdp_min_size

        teacher_abs = jax.eval_shape(self.models.init_denoiser, jax.random.PRNGKey(0))
        self.abstract_state = jax.eval_shape(self.steps.init, teacher_abs, jax.random.PRNGKey(0))
        self.state_sh = tree_shardings(self.abstract_state, self.mesh, rules, min_size)
        self.teacher_sh = tree_shardings(teacher_abs, self.mesh, rules, min_size)

        self.ckpt = ckpt_lib.Checkpointer(str(self.workdir), config.checkpoint.keep, config.checkpoint.async_save)
        # checked before compiling; _init_state restores it or, if its data is damaged, an older step (checked too)
        self.resume_step = self.ckpt.latest_compatible(self.abstract_state, config.to_dict())
        if self.resume_step is not None:
            meta = self.ckpt.restore_meta(self.resume_step)
            check_resume(meta.get("config", {}), config.to_dict(), self.resume_step)

    # ------------------------------------------------------------------------------------------- set-up
    def _frozen(self):
        frozen = self.exp.frozen(self.c, self.models)
        frozen["teacher"] = jax.device_put(frozen["teacher"], self.teacher_sh)
        if frozen.get("reward") is not None:
            rsh = tree_shardings(frozen["reward"], self.mesh, tuple(self.c.sharding.rules), self.c.sharding.fsdp_min_size)
            frozen["reward"] = jax.device_put(frozen["reward"], rsh)
        return frozen

    def _init_state(self, frozen):
        t0 = time.time()
        found = self.ckpt.restore_latest(self.abstract_state, self.state_sh, self.c.to_dict())
        if found is not None:
            self.resume_step, state, meta = found
            log.info("Resumed from step %d (data position %s, saved on mesh %s) in %.2f s", self.resume_step,
                     meta.get("data_position"), meta.get("mesh"), time.time() - t0)
            return state
        init = jax.jit(self.steps.init, out_shardings=self.state_sh)
        return init(frozen["teacher"], jax.random.PRNGKey(self.c.seed))

    def _compile(self, frozen, state, batch):
        """AOT-compile the three steps with explicit shardings; returns (executables, seconds, flops)."""
        mesh, rep = self.mesh, mesh_lib.replicated(self.mesh)
        frozen_sh = jax.tree_util.tree_map(lambda a: a.sharding, frozen)
        batch_sh = jax.tree_util.tree_map(lambda a: a.sharding, batch)
        bsz = self.c.global_batch
        x_sh = mesh_lib.batch_sharding(mesh, 1 + len(self.models.sample_shape))
        r_sh = mesh_lib.batch_sharding(mesh, 1) if self.steps.use_reward else None
        x_abs = jax.ShapeDtypeStruct((bsz,) + tuple(self.models.sample_shape), jnp.float32, sharding=x_sh)
        r_abs = jax.ShapeDtypeStruct((bsz,), jnp.float32, sharding=r_sh) if self.steps.use_reward else None
        jits = {
            "generator": jax.jit(
                self.steps.generator_step,
                in_shardings=(self.state_sh, frozen_sh, batch_sh),
                out_shardings=(self.state_sh, x_sh, r_sh, rep),
                donate_argnums=0,
            ),
            "sample": jax.jit(
                self.steps.sample_step, in_shardings=(self.state_sh, frozen_sh, batch_sh), out_shardings=(x_sh, r_sh)
            ),
            "critic": jax.jit(
                self.steps.critic_step,
                in_shardings=(self.state_sh, frozen_sh, batch_sh, x_sh, r_sh),
                out_shardings=(self.state_sh, rep),
                donate_argnums=0,
            ),
        }
        args = {
            "generator": (state, frozen, batch),
            "sample": (state, frozen, batch),
            "critic": (state, frozen, batch, x_abs, r_abs),
        }
        compiled, seconds, flops = {}, {}, {}
        for name, fn in jits.items():
            t0 = time.time()
            compiled[name] = fn.lower(*args[name]).compile()
            seconds[name], flops[name] = time.time() - t0, _cost_flops(compiled[name])
        return compiled, seconds, flops

    def _generator(self, frozen):
        """jitted (student params, cond, rng) -> (x, rewards | None, zone | None) with the full few-step sampler."""
        st, ts = self.models.student, self.steps.timesteps
        ts = jnp.asarray(ts, jnp.int32 if st.schedule.discrete else jnp.float32)
        a = self.c.amd

        def gen(params, cond, rng):
            bsz = jax.tree_util.tree_leaves(cond)[0].shape[0]
            z = jax.random.normal(rng, (bsz,) + tuple(self.models.sample_shape), jnp.float32)
            x = sample(lambda xt, t: st.x0(params, xt, t, cond), st.schedule, ts, z, jax.random.fold_in(rng, 1))
            if not self.steps.use_reward:
                return x, None, None
            r = self.models.reward(frozen.get("reward"), x, cond)
            adv, _, _ = group_advantage(r, a.group_size, a.std_floor, a.adv_eps, a.adv_clip)
            return x, r, zone_mask(adv, a.tau)

        return jax.jit(gen)

    def generate(self, gen, params, n: int, seed: int):
        """n samples for the experiment's evaluation conditions, in global batches; host numpy outputs."""
        conds = self.exp.eval_conds(self.c, self.models, n)
        bsz, outs = self.c.global_batch, []
        progress, batches = writers.Progress(0, n // bsz), n // bsz
        for i in range(0, n, bsz):
            host = jax.tree_util.tree_map(lambda a: a[i : i + bsz], conds)
            if jax.tree_util.tree_leaves(host)[0].shape[0] < bsz:
                break
            x, r, z = gen(params, _put_batch(host, self.mesh), jax.random.PRNGKey(seed + i))
            outs.append(jax.tree_util.tree_map(lambda v: np.asarray(multihost_utils.process_allgather(v, tiled=True)), (x, r, z)))
            if batches >= 50 and len(outs) * 10 // batches > (len(outs) - 1) * 10 // batches:  # long runs: every 10%
                log.info("generated %d/%d samples, %s", len(outs) * bsz, batches * bsz, progress.line(len(outs)))
        x, r, z = (None if outs[0][j] is None else np.concatenate([o[j] for o in outs]) for j in range(3))
        used = jax.tree_util.tree_map(lambda a: a[: len(x)], conds)
        return x, used, r, z

    # ------------------------------------------------------------------------------------------- loop
    def run(self, stop_after: int | None = None):
        c = self.c
        writer = writers.SummaryWriter(str(self.workdir / "tensorboard"), jsonl=str(self.workdir / "metrics.jsonl"))
        if self.resume_step is None:
            writer.write_hparams(c.to_dict())
        frozen = self._frozen()
        state = self._init_state(frozen)
        start = int(jax.device_get(state.step))
        batch0 = _put_batch(self.models.data.global_batch(start, c.global_batch), self.mesh)
        compiled, comp_s, flops = self._compile(frozen, state, batch0)
        log.info("Compiled in %s s; GFLOP per call %s", {k: round(v, 2) for k, v in comp_s.items()},
                 {k: round(v / 1e9, 4) for k, v in flops.items()})
        gen = self._generator(frozen)
        ttur = c.dmd.ttur
        iter_flops = (flops["generator"] + (ttur - 1) * flops["sample"]) / ttur + flops["critic"]

        preempted = Preempted()
        preempted.install()
        guard = NonFiniteGuard(c.train.max_nonfinite, c)
        progress, window, t_window = writers.Progress(start, c.total_steps), [], time.time()
        meta = lambda s: {"data_position": s, "config": c.to_dict(), "mesh": dict(self.mesh.shape)}
        step = start
        try:
            while step < c.total_steps:
                batch = batch0 if step == start else _put_batch(self.models.data.global_batch(step, c.global_batch),
                                                                 self.mesh)
                if step % ttur == 0:
                    state, x, r, gm = compiled["generator"](state, frozen, batch)
                else:
                    (x, r), gm = compiled["sample"](state, frozen, batch), {}
                state, cm = compiled["critic"](state, frozen, batch, x, r)
                step += 1
                window.append({**gm, **cm})
                guard.observe(step, window[-1])

                if step % c.log.every == 0 or step == c.total_steps:
                    scalars = _mean_metrics(window)  # waits for this step anyway: count its skips now too
                    guard.flush()
                    dt = (time.time() - t_window) / len(window)
                    scalars.update(step_time_s=dt, tflops_per_device=iter_flops / dt / 1e12,  # cost analysis: per device
                                   nonfinite_skipped=guard.total)
                    writer.write_scalars(step, scalars)
                    log.info("step %d/%d %s | %s", step, c.total_steps, _fmt(scalars), progress.line(step))
                    window, t_window = [], time.time()
                if c.log.sample_every and step % c.log.sample_every == 0:
                    self._write_samples(gen, state, writer, step)
                stop = preempted.reached(step)
                if step % c.checkpoint.every == 0 or step == c.total_steps or stop:
                    t0 = time.time()
                    self.ckpt.save(step, state, meta(step), force=True)
                    log.info("checkpoint %d: save started in %.2f s (async=%s)", step, time.time() - t0,
                             c.checkpoint.async_save)
                if stop:
                    log.warning("SIGTERM: saved step %d, exiting.", step)
                    break
                if stop_after is not None and step >= stop_after:
                    break
            guard.flush()
        except NonFiniteError:
            self.ckpt.close()  # the saves already started finish writing; no new one is made
            writer.close()
            raise
        t0 = time.time()
        self.ckpt.wait()
        log.info("checkpoints finished writing (waited %.2f s)", time.time() - t0)
        if step == c.total_steps and c.eval.at_end:
            self.final_eval(gen, state, writer, step)
        writer.flush()
        writer.close()
        self.ckpt.close()
        return state

    def _write_samples(self, gen, state, writer, step):
        """Samples of the current student and the experiment's metrics on them (log.sample_count of them: a quick
        look, the training curves of sweep.py; the final eval uses eval.num_samples)."""
        n = min(self.c.eval.num_samples, self.c.log.sample_count)
        x, cond, r, z = self.generate(gen, state.student, n, seed=2024)
        metrics, images = self.exp.evaluate(self.c, self.models, x, cond, r, z, title=f"{self.c.method} step {step}")
        writer.write_scalars(step, {f"sample_eval/{k}": v for k, v in metrics.items() if writers.is_number(v)})
        writer.write_images(step, images)
        for name, img in images.items():
            writers.save_png(self.workdir / "samples" / f"{name}_{step:07d}.png", img)

    def final_eval(self, gen, state, writer, step):
        x, cond, r, z = self.generate(gen, state.student, self.c.eval.num_samples, seed=777)
        metrics, images = self.exp.evaluate(self.c, self.models, x, cond, r, z, title=f"{self.c.method} step {step}")
        metrics.update(step=step, method=self.c.method, seed=self.c.seed)
        writers.save_eval_json(self.workdir / "eval.json", metrics)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items() if writers.is_number(v)})
        writer.write_images(step, {f"eval/{k}": v for k, v in images.items()})
        for name, img in images.items():
            writers.save_png(self.workdir / "samples" / f"{name}_final.png", img)
        log.info("eval: %s", _fmt(metrics))
        return metrics


def _mean_metrics(window: list[dict]) -> dict[str, float]:
    host = jax.device_get(window)
    keys = sorted({k for m in host for k in m})
    return {k: float(np.mean([m[k] for m in host if k in m])) for k in keys}


def _fmt(d: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(d.items()))
