"""The plan itself: the trainer's session over a TPU topology's devices, in abstract mode (no weights, no data),
compiles each step from ShapeDtypeStructs with their NamedShardings, and keeps only its figures. Traced only
(compile=False), the session's mesh is a jax.sharding.AbstractMesh of the topology's device count (chips.py): no
device and no libtpu are needed."""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import jax
import jax.numpy as jnp

from amd_jax import tasks
from amd_jax.errors import ConfigError
from amd_jax.parallel import mesh as mesh_lib
from amd_jax.plan import chips, figures, jaxpr_flops
from amd_jax.session import Session

log = logging.getLogger("amd_jax")

STEPS = ("generator", "sample", "critic", "eval_sampler")
_OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "Ran out of memory", "exceeds the memory")


def make_plan(config, topology: str, names=STEPS, compiler_options: dict | None = None, compile: bool = True,
              on_step=None) -> dict:
    """The plan of `config` on `topology` (e.g. 'v5p:2x4x4'): per step (names from STEPS) its jaxpr FLOPs (also in
    one student denoiser forward's units) and the figures of figures.step_figures, or {'fits': False, 'error': ...}
    when the compiler runs out of the chip's memory; the TTUR-weighted iteration and full run; and what it was
    planned with (mesh, batch, compiler options). `compile=False` only traces (the jaxpr FLOPs, in seconds) over an
    AbstractMesh, without libtpu.
    `on_step(plan)` is called after every step with the plan so far (a long plan's finished steps survive a kill)."""
    if compile:  # libtpu's devices of the topology: XLA compiles for them on this host
        devices = chips.topology_devices(topology)
        chip, per_chip = chips.device_share(chips.chip(topology), devices[0])  # figures are per device
    else:  # tracing needs no device: an AbstractMesh of the topology's device count (the chip table), no libtpu
        devices = chips.topology_device_count(topology)
        chip, per_chip = chips.device_share(chips.chip(topology))
    try:
        session = Session(config, None, devices=devices, abstract=True)
    except ConfigError as e:  # e.g. a mesh.shape for another device count: say which count the topology has
        count = devices if isinstance(devices, int) else len(devices)
        raise ConfigError(f"{e} (planning for {topology}: {count} devices)") from e
    args = (session.abstract_state_args(), session.abstract_frozen(), session.abstract_batch())
    mesh_shape, n = dict(session.mesh.shape), session.mesh.size
    n_chips = n // per_chip
    unit = _denoiser_forward_flops(session, *args) / n
    steps = {}
    plan = lambda: {
        "config": session.c.experiment, "method": session.c.method, "topology": topology, "chips": n_chips,
        "devices": n, "chip": dataclasses.asdict(chip), "mesh": mesh_shape, "global_batch": session.c.global_batch,
        "batch_per_chip": session.c.global_batch / n_chips, "batch_per_device": session.c.global_batch / n,
        "compiler_options": dict(compiler_options or {}), "jax": jax.__version__,
        "state_params": _params(session.abstract_state.student), "denoiser_forward_flops_per_chip": unit,
        "steps": steps, "iteration": figures.iteration(steps, session.c, n_chips, chip),
        "jaxpr_iteration": figures.jaxpr_iteration(steps, session.c, chip)}
    for name in names:
        log.info("%s %s for %s ...", "compiling" if compile else "tracing", name, topology)
        steps[name] = _plan_step(session, name, args, compiler_options or {}, chip, unit, compile)
        if compile:
            steps[name]["knobs"] = [] if steps[name]["fits"] else figures.knobs(
                session.c, mesh_shape, steps[name].get("memory_bytes"), tasks.memory_knobs(session.c))
        if on_step is not None:
            on_step(plan())
    return plan()


def _plan_step(session: Session, name: str, args, options: dict, chip, unit: float, compile: bool) -> dict:
    jitted, step_args = _program(session, name, *args)
    t0 = time.time()
    traced = jitted.trace(*step_args)
    counted = jaxpr_flops.count(traced.jaxpr)
    per_chip = counted.flops / session.mesh.size
    jaxpr = {"flops_per_chip": per_chip, "denoiser_forwards": per_chip / unit, "traced_loops": counted.traced_loops,
             "pallas_calls": counted.pallas_calls}
    if not compile:
        return {"jaxpr": jaxpr}
    try:
        compiled = traced.lower().compile(options)
    except Exception as e:  # XLA's error type differs across jax versions; only out-of-memory is a plan result
        if not any(s in str(e) for s in _OUT_OF_MEMORY):
            raise
        return {"fits": False, "error": str(e).strip().splitlines()[0][:500], "jaxpr": jaxpr}
    return {**figures.step_figures(compiled, time.time() - t0, chip), "jaxpr": jaxpr}


def _denoiser_forward_flops(session: Session, state, frozen, batch) -> float:
    """The jaxpr FLOPs of one student denoiser call (x0 prediction) on the global batch: the plan's unit."""
    st = session.models.student
    bsz = session.c.global_batch
    x = jax.ShapeDtypeStruct((bsz,) + tuple(session.models.sample_shape), jnp.float32)
    t = jax.ShapeDtypeStruct((bsz,), jnp.int32 if st.schedule.discrete else jnp.float32)
    jaxpr = jax.make_jaxpr(lambda p, x, t, c: st.x0(p, x, t, c))(state.student, x, t, batch["cond"])
    return jaxpr_flops.count(jaxpr).flops


def _program(session: Session, name: str, state, frozen, batch):
    """(jitted function, arguments) of one step: the trainer's three as Session.compile builds them, the
    evaluation sampler (student params, reward params, cond, rng) from Session.sample_fn."""
    if name != "eval_sampler":
        return session.step_programs(frozen, state, batch)[name]
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=mesh_lib.replicated(session.mesh))
    return jax.jit(session.sample_fn), (state.student, frozen["reward"], batch["cond"], key)


def _params(tree) -> int:
    return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(tree))
