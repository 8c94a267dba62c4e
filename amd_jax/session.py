"""The session: everything a job sets up before its first step, as one public API (train, evaluate and the benches).

Order of work (maxdiffusion's abstract-state-first): validate the config -> the task -> mesh -> abstract state
(eval_shape) and its shardings -> refuse an incompatible checkpoint (before anything is loaded or compiled) ->
then, on demand: the frozen teacher/reward (`frozen`), the state restored or jit-initialised into its shardings
(`initial_state`, `restore`), the AOT-compiled steps (`compile`, compile time and FLOPs apart), the few-step sampler
(`sampler`, `generate`, `evaluate`). The training loop itself is amd_jax/loop.py.
Abstract mode (`abstract=True`, the TPU plan amd_jax/plan): the same state, shardings and `compile` over any device
list (a TPU topology's), from ShapeDtypeStructs (`abstract_state_args`, `abstract_frozen`, `abstract_batch`).
"""

from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from amd_jax import checkpoint as ckpt_lib
from amd_jax import inputs, phases, tasks, writers
from amd_jax.conditioning import MeshCondition
from amd_jax.config import check_experiment, check_resume, validate
from amd_jax.errors import ConfigError
from amd_jax.method import sample
from amd_jax.parallel import mesh as mesh_lib
from amd_jax.parallel.sharding import tree_shardings
from amd_jax.steps import Steps

log = logging.getLogger("amd_jax")


def put_batch(host: dict, mesh, axes: tuple[str, ...]):
    """Host-global numpy pytree -> global jax arrays sharded over the batch `axes`.

    Every process computes the whole global batch (a pure function of (seed, step)) and gives each of ITS devices
    exactly the rows the batch sharding assigns to that device, whatever the device order of the mesh."""

    def one(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, mesh_lib.batch_sharding(mesh, axes, a.ndim), lambda idx: a[idx])

    return jax.tree_util.tree_map(one, host)


def _with_shardings(tree, shardings):
    """ShapeDtypeStructs of `tree`'s leaves, each with its NamedSharding from the matching tree `shardings`."""
    return jax.tree_util.tree_map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), tree, shardings)


def _cost_flops(compiled) -> float:
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0))
    except Exception:  # cost analysis is best-effort on some backends
        return 0.0


class Session:
    """One job's set-up on this machine's devices (or `devices`); the public API of train, evaluate and the
    benches. Construction is cheap (no weights loaded, nothing compiled) and refuses a bad config or an
    incompatible checkpoint first."""

    def __init__(self, config, workdir: str | None, devices=None, training: bool = True, abstract: bool = False):
        """`training=False` (offline evaluation): a checkpoint past total_steps or written with other training
        keys is not a resume, so check_resume does not apply; shapes must still match.
        `abstract=True` (the TPU plan, amd_jax/plan): the task reads no file (weights, data) and there is no
        checkpointer (`workdir` may be None); only the abstract_* methods, `compile` and `sample_fn` are usable.
        `devices` may then be devices of another platform (a TPU topology's, compiled for on this host), or a device
        count: an AbstractMesh of that size, which traces but cannot compile (the plan's --nocompile, no libtpu)."""
        config = config.copy_and_resolve_references()  # the caller's config is never changed
        self.c, self.workdir = config, None if workdir is None else epath.Path(workdir)
        devices = jax.devices() if devices is None else devices if isinstance(devices, int) else list(devices)
        if not abstract and workdir is not None:  # another experiment's checkpoints: refused before any task check
            check_experiment(ckpt_lib.newest_config(str(self.workdir)), config.to_dict(), self.workdir)
        # every check, the task's own too, once and before anything expensive
        validate(config, devices if isinstance(devices, int) else len(devices), jax.process_count(), abstract)
        if "teacher" in config and not config.teacher.dir and workdir is not None:
            config.teacher.dir = str(self.workdir / "teacher")
        self.mesh = mesh_lib.make_mesh(config.mesh.axes, config.mesh.shape, devices)
        self.batch_axes = mesh_lib.batch_axes(self.mesh, config.mesh.batch_axes)  # the rows are split over these
        self.task = tasks.build(config, self.mesh, abstract=abstract)
        self.models = self.task.models
        self.steps = Steps(config, self.models)
        rules, min_size = tuple(config.sharding.rules), config.sharding.fsdp_min_size
        # the task's conditioning computed on the mesh (its encoders placed on first use); None: in the host batch
        cond = self.task.condition
        self.condition = None if cond is None else MeshCondition(cond, self.mesh, self.batch_axes, rules, min_size)

        teacher_abs = jax.eval_shape(self.models.init_denoiser, jax.random.PRNGKey(0))
        self.abstract_state = jax.eval_shape(self.steps.init, teacher_abs, jax.random.PRNGKey(0))
        self.state_sh = tree_shardings(self.abstract_state, self.mesh, rules, min_size)
        if self.ema:  # the rules match paths: rules written for student/... would miss student_ema/...
            self.state_sh = self.state_sh.replace(student_ema=self.state_sh.student)
        self.steps.param_shardings = {"student": self.state_sh.student, "critic": self.state_sh.critic}
        self.teacher_sh = tree_shardings(teacher_abs, self.mesh, rules, min_size)
        self.ckpt, self.resume_step = None, None
        self.resume_meta = {}  # the meta of the checkpoint initial_state restored (its "updates" counts, ...)
        self.training, self.resume_inputs = training, None  # the resumed checkpoint's input digests (amd_jax/inputs)
        if abstract:
            return
        # the offline evaluation only reads checkpoints/: no write probe, nothing created (a read-only run evaluates)
        self.ckpt = ckpt_lib.Checkpointer(str(self.workdir), config.checkpoint.keep, config.checkpoint.async_save,
                                          read_only=not training)
        # checked before compiling; initial_state restores it or, if its data is damaged, an older step (checked too)
        self.resume_step = self.ckpt.latest_compatible(self.abstract_state, config.to_dict())
        if self.resume_step is not None and training:
            meta = self.ckpt.restore_meta(self.resume_step)
            check_resume(meta.get("config", {}), config.to_dict(), self.resume_step)
            self.resume_inputs = meta.get("inputs")

    @property
    def ema(self) -> bool:
        """The state holds an EMA of the student (student.ema_decay > 0), evaluated beside the raw student."""
        return self.steps.ema_decay > 0

    # ------------------------------------------------------------------------------------------- set-up
    def frozen(self, teacher: bool = True) -> dict:
        """The frozen parameters, sharded: {'teacher': ... (None when not asked for), 'reward': ... | None}.

        The task loads them (or trains them on first use); the offline evaluation asks for the reward only.
        """
        frozen = {"teacher": jax.device_put(self.task.teacher(), self.teacher_sh) if teacher else None,
                  "reward": self.task.reward()}  # after the teacher: its first-use stage may build the reward
        if frozen["reward"] is not None:
            rsh = tree_shardings(frozen["reward"], self.mesh, tuple(self.c.sharding.rules),
                                 self.c.sharding.fsdp_min_size)
            frozen["reward"] = jax.device_put(frozen["reward"], rsh)
        if teacher and self.training and self.ckpt is not None:  # by content: a resume cannot switch them silently
            self.ckpt.inputs = inputs.record(self.c, frozen, self.resume_inputs, self.resume_step)
        return frozen

    def initial_state(self, frozen):
        """The newest intact checkpoint's state (setting resume_step), or a fresh one made from the teacher."""
        t0 = time.time()
        found = self.ckpt.restore_latest(self.abstract_state, self.state_sh, self.c.to_dict())
        if found is not None:
            self.resume_step, state, meta = found
            self.resume_meta = meta
            log.info("Resumed from step %d (data position %s, saved on mesh %s) in %.2f s", self.resume_step,
                     meta.get("data_position"), meta.get("mesh"), time.time() - t0)
            return state
        init = jax.jit(self.steps.init, out_shardings=self.state_sh)
        return init(frozen["teacher"], jax.random.PRNGKey(self.c.seed))

    def restore(self, step: int):
        """The verified state of checkpoint `step` on this session's mesh."""
        return self.ckpt.restore(step, self.abstract_state, self.state_sh)[0]

    def restore_student(self, step: int):
        """Only the student's parameters of checkpoint `step` (verified), for sampling."""
        return self.ckpt.restore_part(step, "student", self.abstract_state.student, self.state_sh.student)

    def restore_student_ema(self, step: int):
        """Only the student's EMA of checkpoint `step` (verified), for sampling; needs student.ema_decay > 0."""
        return self.ckpt.restore_part(step, "student_ema", self.abstract_state.student_ema,
                                      self.state_sh.student_ema)

    def batch(self, step: int):
        """The global training batch of `step`, sharded over the mesh's batch axes (its cond computed there when
        the task has a `condition`)."""
        batch = put_batch(self.task.data.global_batch(step, self.c.global_batch), self.mesh, self.batch_axes)
        return batch if self.condition is None else {**batch, "cond": self.condition(batch["cond"])}

    # ------------------------------------------------------------------------------ abstract (no weights, no data)
    def abstract_state_args(self):
        """The training state as ShapeDtypeStructs carrying their NamedShardings: `compile`'s `state` argument."""
        return _with_shardings(self.abstract_state, self.state_sh)

    def abstract_frozen(self) -> dict:
        """{'teacher', 'reward'} as sharded ShapeDtypeStructs, from the task's architecture alone (loads nothing)."""
        if self.task.abstract_frozen is None:
            raise ConfigError(f"experiment={self.c.experiment!r} cannot describe its frozen parameters without "
                              "loading them (its task has no abstract_frozen hook; docs/ADDING_A_TASK.md, ABSTRACT).")
        frozen = self.task.abstract_frozen()
        rules, min_size = tuple(self.c.sharding.rules), self.c.sharding.fsdp_min_size
        reward = frozen["reward"]
        return {"teacher": _with_shardings(frozen["teacher"], self.teacher_sh),
                "reward": None if reward is None else
                _with_shardings(reward, tree_shardings(reward, self.mesh, rules, min_size))}

    def abstract_batch(self):
        """The global training batch as ShapeDtypeStructs sharded over the batch axes (shapes from the task)."""
        if self.task.abstract_batch is None:
            raise ConfigError(f"experiment={self.c.experiment!r}: its task has no abstract_batch.")
        return jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                           sharding=mesh_lib.batch_sharding(self.mesh, self.batch_axes, a.ndim)),
            self.task.abstract_batch(self.c.global_batch))

    def compile(self, frozen, state, batch, names=("generator", "sample", "critic"), compiler_options=None):
        """AOT-compile the steps `names` with explicit shardings; returns (executables, seconds, flops).

        The arguments are arrays, or ShapeDtypeStructs with shardings (abstract_*: the plan); `compiler_options`
        go to XLA's `.compile()` (e.g. {'xla_tpu_enable_latency_hiding_scheduler': 'false'})."""
        programs = self.step_programs(frozen, state, batch)
        compiled, seconds, flops = {}, {}, {}
        for name in names:
            jitted, args = programs[name]
            t0 = time.time()
            with phases.announced(f"Compiling the {name} step") as note:
                lowered = jitted.lower(*args)
                cache = phases.CompileCacheHits()  # this compilation's events only
                compiled[name] = lowered.compile(compiler_options)
                note["result"] = cache.source()
            seconds[name], flops[name] = time.time() - t0, _cost_flops(compiled[name])
        return compiled, seconds, flops

    def step_programs(self, frozen, state, batch) -> dict:
        """{step name: (jitted step with explicit shardings, its arguments)} for the generator, sample and critic
        steps; compile() compiles them, the plan also traces them (plan/jaxpr_flops.py)."""
        mesh, rep = self.mesh, mesh_lib.replicated(self.mesh)
        frozen_sh = jax.tree_util.tree_map(lambda a: a.sharding, frozen)
        batch_sh = jax.tree_util.tree_map(lambda a: a.sharding, batch)
        bsz = self.c.global_batch
        x_sh = mesh_lib.batch_sharding(mesh, self.batch_axes, 1 + len(self.models.sample_shape))
        r_sh = mesh_lib.batch_sharding(mesh, self.batch_axes, 1) if self.steps.use_reward else None
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
        return {name: (jits[name], args[name]) for name in jits}

    def sample_fn(self, params, reward_params, cond, rng):
        """(student params, reward params | None, cond, rng) -> (x, rewards | None, zone | None): the full few-step
        sampler, pure (the evaluation sampler; the plan compiles it as 'eval_sampler')."""
        st = self.models.student
        ts = jnp.asarray(self.steps.timesteps, jnp.int32 if st.schedule.discrete else jnp.float32)
        bsz = jax.tree_util.tree_leaves(cond)[0].shape[0]
        z = jax.random.normal(rng, (bsz,) + tuple(self.models.sample_shape), jnp.float32)
        x = sample(lambda xt, t: st.x0(params, xt, t, cond), st.schedule, ts, z, jax.random.fold_in(rng, 1))
        if not self.steps.use_reward:
            return x, None, None
        r = self.models.reward(reward_params, x, cond)
        return x, r, self.steps.advantage(r)[1]

    def sampler(self, frozen):
        """jitted (student params, cond, rng) -> (x, rewards | None, zone | None) with the full few-step sampler."""
        gen = jax.jit(self.sample_fn)
        return lambda params, cond, rng: gen(params, frozen.get("reward"), cond, rng)

    def generate(self, gen, params, n: int, seed: int):
        """n samples for the experiment's evaluation conditions, in global batches; host numpy outputs."""
        conds = self.task.eval_conds(n)
        bsz, outs = self.c.global_batch, []
        progress, batches = writers.Progress(0, n // bsz), n // bsz
        for i in range(0, n, bsz):
            host = jax.tree_util.tree_map(lambda a: a[i : i + bsz], conds)
            if jax.tree_util.tree_leaves(host)[0].shape[0] < bsz:
                break
            cond = put_batch(host, self.mesh, self.batch_axes)
            cond = cond if self.condition is None else self.condition(cond)
            x, r, z = gen(params, cond, jax.random.PRNGKey(seed + i))
            outs.append(jax.tree_util.tree_map(lambda v: np.asarray(multihost_utils.process_allgather(v, tiled=True)), (x, r, z)))
            if batches >= 20 and len(outs) * 4 // batches > (len(outs) - 1) * 4 // batches and len(outs) < batches:
                log.info("  generated %d/%d samples, %s", len(outs) * bsz, batches * bsz, progress.line(len(outs)))
        x, r, z = (None if outs[0][j] is None else np.concatenate([o[j] for o in outs]) for j in range(3))
        used = jax.tree_util.tree_map(lambda a: a[: len(x)], conds)
        return x, used, r, z

    def evaluate(self, gen, params, n: int, seed: int, title: str = "", save_dir=None):
        """n fresh samples of `params` and the task's metrics and images of them."""
        x, cond, r, z = self.generate(gen, params, n, seed)
        return self.task.evaluate(x, cond, r, z, title=title, save_dir=save_dir)
