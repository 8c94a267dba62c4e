"""The config checks: `validate` refuses a config that cannot run, before anything is built or compiled, naming the
key, the value, why and the fix (ConfigError). It runs the generic knob checks below, the evaluator checks
(config.evals and the two built-in evaluators of amd_jax/evaluators.py) and the task's own checks
(amd_jax.tasks.check), once: the Session calls it first.

`need`, `is_int` and `is_real` are the helpers the checks (here and in amd_jax/config/resume.py) are written with.
"""

from __future__ import annotations

import logging
import math
import numbers

from amd_jax.errors import ConfigError

log = logging.getLogger(__name__)

# Integer knobs: key -> (smallest allowed value, what the knob means).
_INT_KNOBS = {
    "total_steps": (1, "the number of training iterations"),
    "global_batch": (1, "the samples of one iteration over all devices"),
    "dmd.ttur": (1, "critic steps per generator step (the generator updates when step % ttur == 0)"),
    "optim.warmup_steps": (0, "the linear learning-rate warm-up, 0 = none"),
    "checkpoint.every": (1, "a checkpoint is saved when step % every == 0"),
    "checkpoint.keep": (1, "the checkpoints kept; 0 would delete every checkpoint the run writes"),
    "log.every": (1, "metrics are logged when step % every == 0"),
    "log.sample_every": (0, "samples and their metrics when step % sample_every == 0, 0 = never"),
    "amd.group_size": (0, "samples per reward group; 0 or 1 = the whole global batch is one group"),
    "reward.chunks": (1, "sequential pieces of the batch the reward is computed in (1 = the whole batch at once)"),
    "train.microbatches": (1, "sequential pieces of the batch the losses and gradients are accumulated over "
                              "(1 = the whole batch at once)"),
    "train.max_nonfinite": (1, "the run stops after this many consecutive skipped (NaN/inf) updates; 0 stops every "
                               "run at its first iteration"),
}

# Float knobs: (key, accepts(value), the allowed range as the fix says it, why the rest is wrong).
_FLOAT_KNOBS = (
    ("student.ema_decay", lambda v: 0 <= v < 1, "a value in [0, 1): 0 = no EMA, e.g. 0.999",
     "the student's EMA is decay * ema + (1 - decay) * student: 1 never leaves the teacher, outside [0, 1) it "
     "diverges"),
    ("amd.s", lambda v: 0 <= v <= 1, "a value in [0, 1]",
     "the DSA strength: alpha, beta = 1 -+ s a~ (|a~| <= 1) change sign for s > 1, negative s inverts DSA"),
    ("amd.std_floor", lambda v: v >= 0, "a value >= 0", "the floor on a group's reward std"),
    ("amd.adv_eps", lambda v: v > 0, "a value > 0, e.g. 1e-6",
     "it is added to the group's reward std before dividing: 0 divides by zero when a group's rewards are equal"),
    ("amd.adv_clip", lambda v: v > 0, "a value > 0, e.g. 1.0", "the advantage is clipped to [-adv_clip, adv_clip]"),
    ("amd.rls_lambda", lambda v: v >= 0, "a value >= 0", "the RLS strength; negative weights the zone samples down"),
    ("optim.student_lr", lambda v: v >= 0, "a value >= 0", "a negative learning rate ascends the loss"),
    ("optim.critic_lr", lambda v: v >= 0, "a value >= 0", "a negative learning rate ascends the loss"),
    ("optim.grad_clip", lambda v: v > 0, "a value > 0, e.g. 10.0",
     "the global-norm clip: <= 0 scales every update to zero or flips its sign"),
    ("optim.b1", lambda v: 0 <= v < 1, "a value in [0, 1), e.g. 0.9",
     "Adam's first-moment decay: its bias correction divides by 1 - b1^t"),
    ("optim.b2", lambda v: 0 <= v < 1, "a value in [0, 1), e.g. 0.999",
     "Adam's second-moment decay: b2 >= 1 breaks Adam (bias correction 1 - b2^t <= 0)"),
    ("optim.eps", lambda v: v > 0, "a value > 0, e.g. 1e-8", "Adam's denominator term: <= 0 can divide by zero"),
    ("optim.weight_decay", lambda v: v >= 0, "a value >= 0", "negative weight decay grows the weights"),
    ("dmd.guidance_scale", lambda v: v > 0, "a value > 0 (1 = no guidance)",
     "the CFG scale omega of xr_u + omega (xr_c - xr_u): <= 0 removes or inverts the conditional pull"),
    ("gan.generator_weight", lambda v: v >= 0, "a value >= 0", "a negative GAN weight trains against the GAN loss"),
    ("gan.critic_weight", lambda v: v >= 0, "a value >= 0", "a negative GAN weight trains against the GAN loss"),
)


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested dict (config.to_dict(), a checkpoint's saved config) as {dotted key: leaf}."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def validate(c, num_devices: int, num_processes: int = 1, abstract: bool = False) -> None:
    """Every check that needs no compilation, each once: `check_knobs` (the generic knobs and the evaluators),
    then the task's own (amd_jax.tasks.check; `abstract`: the plan's, which reads no file). Raises ConfigError
    naming the key, the value, why and the fix. The Session calls it before anything is built."""
    from amd_jax import tasks  # the task modules (and the networks they import) only once a config is checked

    check_knobs(c, num_devices, num_processes)
    tasks.check(c, abstract)  # the task's own checks, before it builds anything


def check_knobs(c, num_devices: int, num_processes: int = 1) -> None:
    """The checks every task shares (validate's, without the task's own): the knobs and the evaluators.

    Also logs a warning when eval.num_samples or log.sample_count is not a multiple of the global batch (the
    sampler drops the last partial batch), with the number of samples that will really be evaluated."""
    flat = flatten(c.to_dict())
    _check_finite(flat)
    _check_numbers(flat)
    _check_choices(c)
    _check_timesteps(c)
    _check_batch(c, num_devices, num_processes)
    check_evaluators(c)
    for line in sample_count_notes(c):
        log.warning(line)


def need(ok: bool, msg: str) -> None:
    """Raise ConfigError(msg) unless `ok`."""
    if not ok:
        raise ConfigError(msg)


def is_int(v) -> bool:
    """An integer, not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A real number (int or float), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_finite(flat: dict) -> None:
    """Every float leaf (and every float inside a tuple leaf) is finite: NaN compares False and silently turns
    checks and masks off (amd.tau = nan: no sample is ever flagged), inf overflows."""
    for key, value in flat.items():
        items = value if isinstance(value, (list, tuple)) else (value,)
        need(
            all(not is_real(v) or math.isfinite(v) for v in items),
            f"{key}={value!r}: every float knob must be finite (NaN compares False and silently switches the "
            f"computation it feeds off; inf overflows). Set --config.{key} to a finite number.",
        )


def _check_numbers(flat: dict) -> None:
    for key, (lo, meaning) in _INT_KNOBS.items():
        v = flat[key]
        need(is_int(v) and v >= lo,
             f"{key}={v!r}: {meaning}; it must be an integer >= {lo}. Set --config.{key} to an integer >= {lo}.")
    for key, ok, allowed, why in _FLOAT_KNOBS:
        v = flat[key]
        need(is_real(v) and ok(v), f"{key}={v!r}: {why}. Set --config.{key} to {allowed}.")


def _check_choices(c) -> None:
    """String choices and the checks that relate several knobs."""
    need(c.method in ("dmd2", "amd"), f"method={c.method!r}: use --config.method=dmd2 or --config.method=amd.")
    need(c.dmd.normalizer in ("sample", "batch", "none"),
         f"dmd.normalizer={c.dmd.normalizer!r}: use 'sample', 'batch' or 'none'.")
    need(0.0 <= c.dmd.t_min <= c.dmd.t_max <= 1.0,
         f"dmd.t_min/t_max={c.dmd.t_min}/{c.dmd.t_max}: need 0 <= t_min <= t_max <= 1.")
    _check_ca_timestep(c.dmd)
    need(c.amd.dsa_mode in ("soft", "hard"), f"amd.dsa_mode={c.amd.dsa_mode!r}: use 'soft' or 'hard'.")
    need(c.amd.rls_mode in ("soft", "hard"), f"amd.rls_mode={c.amd.rls_mode!r}: use 'soft' or 'hard'.")
    a = c.amd
    need(a.dsa_mode != "soft" or a.s * a.adv_clip <= 1.0,
         f"amd.dsa_mode='soft' with s={a.s} and adv_clip={a.adv_clip}: alpha, beta = 1 -+ s a~ change sign for "
         "|a~| up to adv_clip; keep s * adv_clip <= 1.")
    need(a.rls_mode != "soft" or a.rls_lambda * a.adv_clip < 1.0,
         f"amd.rls_mode='soft' with rls_lambda={a.rls_lambda} and adv_clip={a.adv_clip} can make weights <= 0: "
         "keep rls_lambda * adv_clip < 1.")
    prof = tuple(c.train.get("profile_steps", ()))
    need(prof == () or (len(prof) == 2 and all(is_int(v) for v in prof) and 0 <= prof[0] < prof[1]),
         f"train.profile_steps={prof}: give (first, last) iterations with 0 <= first < last, or () for no trace.")
    need(a.tau < a.adv_clip,
         f"amd.tau={a.tau} >= amd.adv_clip={a.adv_clip}: the advantage is clipped to >= -adv_clip, so a~ < -tau "
         "never holds and the Forbidden-Zone mask is always 0 (hard DSA and hard RLS silently off). "
         "Set --config.amd.tau below adv_clip, e.g. 0.5.")


def _check_ca_timestep(d) -> None:
    """dmd.ca_t_min/ca_t_max: both negative (the CA term at the DM term's t) or 0 <= ca_t_min <= ca_t_max <= 1."""
    lo, hi = d.ca_t_min, d.ca_t_max
    need(is_real(lo) and is_real(hi) and ((lo < 0 and hi < 0) or 0.0 <= lo <= hi <= 1.0),
         f"dmd.ca_t_min/ca_t_max={lo}/{hi}: give both as fractions of the time axis with 0 <= ca_t_min <= ca_t_max "
         "<= 1 (the CA term's own re-noise range, e.g. 0.5/0.98), or set both to -1 to use the DM term's t.")


def _check_timesteps(c) -> None:
    """student.timesteps lie on the schedule's time axis and strictly decrease (DMD2: noise first, e.g.
    (999, 749, 499, 249) on SDXL's DDPM axis; backward simulation walks them in order)."""
    from amd_jax.method.schedules import make_schedule

    try:
        schedule = make_schedule(c.schedule.name, **c.schedule.kwargs.to_dict())
    except (TypeError, ValueError) as e:
        raise ConfigError(f"schedule.name={c.schedule.name!r} / schedule.kwargs={c.schedule.kwargs.to_dict()}: {e}")
    ts = tuple(c.student.timesteps)
    need(len(ts) >= 1, "student.timesteps is empty: give at least one timestep, e.g. (999,).")
    if schedule.discrete:
        hi = schedule.num_timesteps - 1
        ok = all(is_real(t) and float(t).is_integer() and 0 <= t <= hi for t in ts)
        axis = f"is discrete: integers in [0, {hi}] (num_timesteps - 1), e.g. ({hi},) or 4 steps " \
               f"({hi}, {hi * 3 // 4}, {hi // 2}, {hi // 4})"
    else:
        ok = all(is_real(t) and 0.0 <= t <= 1.0 for t in ts)
        axis = "is continuous: t in [0, 1] with 1 = pure noise, e.g. (1.0,) or 4 steps (1.0, 0.75, 0.5, 0.25)"
    need(ok, f"student.timesteps={ts}: the {c.schedule.name!r} schedule {axis}. Set --config.student.timesteps.")
    need(all(a > b for a, b in zip(ts, ts[1:])),
         f"student.timesteps={ts}: a multi-step student starts at the noise end and each step goes closer to the "
         f"data, so the timesteps must strictly decrease without duplicates (DMD2's convention, e.g. "
         f"{tuple(sorted(set(ts), reverse=True))}).")


def _check_batch(c, num_devices: int, num_processes: int) -> None:
    from amd_jax.parallel.mesh import resolve_mesh_shape

    shape = dict(zip(c.mesh.axes, resolve_mesh_shape(c.mesh.axes, c.mesh.shape, num_devices)))
    need("data" in shape, f"mesh.axes={tuple(c.mesh.axes)} has no 'data' axis.")
    axes = c.mesh.batch_axes
    need(isinstance(axes, (tuple, list)) and len(axes) > 0 and all(a in shape for a in axes),
         f"mesh.batch_axes={axes!r}: name the mesh axes the batch is split over, a non-empty subset of mesh.axes="
         f"{tuple(c.mesh.axes)}, e.g. ('data', 'fsdp').")
    dp = math.prod(shape[a] for a in axes)
    over = "*".join(axes)
    need(
        c.global_batch % dp == 0,
        f"global_batch={c.global_batch} is not divisible by the data-parallel size {over}={dp} of mesh {shape}: "
        f"set --config.global_batch to a multiple of {dp}.",
    )
    need(
        c.global_batch % num_processes == 0,
        f"global_batch={c.global_batch} is not divisible by the {num_processes} processes.",
    )
    k = c.amd.group_size
    need(
        k in (0, 1) or c.global_batch % k == 0,
        f"amd.group_size={k} does not divide global_batch={c.global_batch}: choose K with global_batch % K == 0.",
    )
    chunks, per_device = c.reward.chunks, c.global_batch // dp
    need(
        per_device % chunks == 0,
        f"reward.chunks={chunks} does not divide the {per_device} samples per device (global_batch={c.global_batch} "
        f"over {over}={dp}): choose a divisor of {per_device}, so that every piece holds rows of every device.",
    )
    micro = c.train.microbatches
    need(
        per_device % micro == 0,
        f"train.microbatches={micro} does not divide the {per_device} samples per device (global_batch="
        f"{c.global_batch} over {over}={dp}): choose a divisor of {per_device}, so that every micro-batch holds "
        "rows of every device.",
    )
    need(
        micro == 1 or c.dmd.normalizer != "batch",
        f"train.microbatches={micro} with dmd.normalizer='batch': that normaliser is one statistic of the whole batch "
        "and every micro-batch would compute its own; use dmd.normalizer='sample' or 'none', or train.microbatches=1.",
    )


def sample_count_notes(c) -> list[str]:
    """What Session.generate really evaluates when a sample count is not a multiple of the global batch: it
    generates whole global batches and drops the last partial one. In-training samples number
    min(eval.num_samples, log.sample_count)."""
    notes, bsz, n_eval = [], c.global_batch, c.eval.num_samples
    if n_eval % bsz:
        notes.append(_partial_batch_note("eval.num_samples", n_eval, bsz, "the final evaluation"))
    n_log = c.log.sample_count
    if c.log.sample_every and n_log < n_eval and n_log % bsz:
        notes.append(_partial_batch_note("log.sample_count", n_log, bsz, "the in-training samples"))
    return notes


def _partial_batch_note(key: str, n: int, bsz: int, what: str) -> str:
    used = n // bsz * bsz
    return (f"{key}={n} is not a multiple of global_batch={bsz}: {what} will use {used} samples "
            f"({n // bsz} x {bsz}; the last partial batch is dropped). Set --config.{key} to {used} or {used + bsz} "
            "to get exactly the number you ask for.")


# The evaluators a config declares (amd_jax/evaluators.py runs them). TYPES: the evaluator types ('task' =
# Task.evaluate on fresh samples of the student); LEGACY: the names the long-standing keys give their evaluators;
# DEFAULTS: the fields of a config.evals entry other than num_samples, which has no default.
EVALUATOR_TYPES = ("task",)
LEGACY_EVALUATORS = {"samples": "log.sample_every / log.sample_count", "final": "eval.at_end / eval.num_samples"}
EVALUATOR_DEFAULTS = {"type": "task", "every": 0, "at_end": False, "seed": 0}


def check_evaluators(c) -> None:
    """Refuse an evaluator that cannot run, naming the key and the fix."""
    need(c.eval.num_samples >= c.global_batch,
         f"eval.num_samples={c.eval.num_samples} is smaller than one global batch ({c.global_batch}): samples are "
         "generated a global batch at a time; raise eval.num_samples.")
    need(not c.log.sample_every or c.log.sample_count >= c.global_batch,
         f"log.sample_count={c.log.sample_count} is smaller than one global batch ({c.global_batch}): raise it, or "
         "set log.sample_every=0.")
    for name, entry in c.get("evals", {}).items():
        where = f"evals.{name}"
        need(name not in LEGACY_EVALUATORS, f"{where}: the evaluator {name!r} is set by "
                                             f"{LEGACY_EVALUATORS.get(name)}; set those keys, or give this evaluator "
                                             "another name.")
        need(hasattr(entry, "keys"), f"{where}={entry!r}: give a dict {{type, every, at_end, num_samples, seed}}.")
        unknown = sorted(set(entry) - {*EVALUATOR_DEFAULTS, "num_samples"})
        need(not unknown, f"{where}: unknown field(s) {unknown}; an evaluator has type, every, at_end, "
                          "num_samples and seed.")
        e = {**EVALUATOR_DEFAULTS, **entry}
        need(e["type"] in EVALUATOR_TYPES, f"{where}.type={e['type']!r}: use one of {list(EVALUATOR_TYPES)}.")
        need(is_int(e["every"]) and e["every"] >= 0,
             f"{where}.every={e['every']!r}: an integer >= 0 (evaluate when step % every == 0, 0 = never).")
        need(isinstance(e["at_end"], bool), f"{where}.at_end={e['at_end']!r}: True or False.")
        need(e["every"] or e["at_end"], f"{where}: every=0 and at_end=False, so it never runs: set "
                                        f"--config.{where}.every or --config.{where}.at_end=True, or remove it.")
        need(is_int(e["seed"]), f"{where}.seed={e['seed']!r}: an integer.")
        n = entry.get("num_samples")
        need(is_int(n) and n >= c.global_batch,
             f"{where}.num_samples={n!r}: samples are generated a global batch at a time; give an integer >= "
             f"global_batch={c.global_batch}.")
