"""The config checks: `validate` refuses a config that cannot run, before anything is built or compiled, naming the
key, the value, why and the fix (ConfigError). It runs the generic knob checks below, the evaluator checks
(config.evals and the two built-in evaluators of amd_jax/evaluators.py) and the task's own checks
(amd_jax.tasks.check), once: the Session calls it first.

`need`, `is_int` and `is_real` are the helpers the checks (here and in amd_jax/config/resume.py) are written with;
`check_table` (the knob tables: integers, floats, choices, flags, strings) and `need_input_path` /
`need_output_dir` (local files a run reads or a folder it creates) are what the tasks' own checks use.
"""

from __future__ import annotations

import logging
import math
import numbers
import os

from amd_jax.errors import ConfigError

log = logging.getLogger(__name__)

SEED_MAX = 2**31 - 1  # seeds: jax.random.PRNGKey and numpy's default_rng([seed, step]) both take [0, 2^31)
FLOAT_MAX = 1e6  # no float knob of any task is meaningful beyond this magnitude (see _check_magnitude)

# Integer knobs: key -> (smallest allowed value, what the knob means) or (smallest, largest, what it means).
_INT_KNOBS = {
    "seed": (0, SEED_MAX, "the seed of the student's noise, the re-noising and the networks' init"),
    "total_steps": (1, "the number of training iterations"),
    "global_batch": (1, "the samples of one iteration over all devices"),
    "dmd.ttur": (1, "critic steps per generator step (the generator updates when step % ttur == 0)"),
    "optim.warmup_steps": (0, "the linear learning-rate warm-up, 0 = none"),
    "checkpoint.every": (1, "a checkpoint is saved when step % every == 0"),
    "checkpoint.keep": (1, "the checkpoints kept; 0 would delete every checkpoint the run writes"),
    "log.every": (1, "metrics are logged when step % every == 0"),
    "log.sample_every": (0, "samples and their metrics when step % sample_every == 0, 0 = never"),
    "log.sample_count": (1, "the samples generated and evaluated every log.sample_every steps"),
    "eval.num_samples": (1, "the samples of the final evaluation (and of the teacher's report)"),
    "amd.group_size": (0, "samples per reward group; 0 or 1 = the whole global batch is one group"),
    "reward.chunks": (1, "sequential pieces of the batch the reward is computed in (1 = the whole batch at once)"),
    "train.microbatches": (1, "sequential pieces of the batch the losses and gradients are accumulated over "
                              "(1 = the whole batch at once)"),
    "train.max_nonfinite": (1, "the run stops after this many consecutive skipped (NaN/inf) updates; 0 stops every "
                               "run at its first iteration"),
    "sharding.fsdp_min_size": (0, "parameters with fewer elements are replicated, larger ones FSDP-sharded "
                                  "(0 = shard every parameter)"),
}

# No upper bound of their own (only _check_magnitude's): a diverging student or critic (student_lr=1e6) is what the
# non-finite guard and train.max_skipped_fraction handle at run time, and the way their tests provoke it.
_LR_WHY = "a negative learning rate ascends the loss"

# Float knobs: (key, accepts(value), the allowed range as the fix says it, why the rest is wrong).
_FLOAT_KNOBS = (
    ("student.ema_decay", lambda v: 0 <= v < 1, "a value in [0, 1): 0 = no EMA, e.g. 0.999",
     "the student's EMA is decay * ema + (1 - decay) * student: 1 never leaves the teacher, outside [0, 1) it "
     "diverges"),
    ("amd.s", lambda v: 0 <= v <= 1, "a value in [0, 1]",
     "the DSA strength: alpha, beta = 1 -+ s a~ (|a~| <= 1) change sign for s > 1, negative s inverts DSA"),
    ("amd.tau", lambda v: v >= 0, "a value in [0, amd.adv_clip), e.g. 0.5",
     "the zone mask flags the samples whose clipped advantage a~ < -tau: a negative tau also flags samples "
     "above their group's mean reward (tau=-1 flags about 84% of them)"),
    ("amd.std_floor", lambda v: v >= 0, "a value >= 0", "the floor on a group's reward std"),
    ("amd.adv_eps", lambda v: 0 < v <= 1e-3, "a value in (0, 1e-3], e.g. 1e-6",
     "it only guards the division a = (r - mean) / (std + adv_eps): 0 divides by zero when a group's rewards are "
     "equal, a large one shrinks every advantage towards 0 and silently switches AMD off (HPSv2 rewards have a std "
     "near 1e-2); amd.std_floor is the knob that damps groups of near-equal rewards"),
    ("amd.adv_clip", lambda v: v > 0, "a value > 0, e.g. 1.0", "the advantage is clipped to [-adv_clip, adv_clip]"),
    ("amd.rls_lambda", lambda v: v >= 0, "a value >= 0", "the RLS strength; negative weights the zone samples down"),
    ("optim.student_lr", lambda v: v >= 0, "a value >= 0, e.g. 1e-4", _LR_WHY),
    ("optim.critic_lr", lambda v: v >= 0, "a value >= 0, e.g. 1e-4", _LR_WHY),
    ("optim.grad_clip", lambda v: v > 0, "a value > 0, e.g. 10.0",
     "the global-norm clip: <= 0 scales every update to zero or flips its sign"),
    ("optim.b1", lambda v: 0 <= v < 1, "a value in [0, 1), e.g. 0.9",
     "Adam's first-moment decay: its bias correction divides by 1 - b1^t"),
    ("optim.b2", lambda v: 0 <= v < 1, "a value in [0, 1), e.g. 0.999",
     "Adam's second-moment decay: b2 >= 1 breaks Adam (bias correction 1 - b2^t <= 0)"),
    ("optim.eps", lambda v: 0 < v <= 1e-3, "a value in (0, 1e-3], e.g. 1e-8",
     "Adam's update is m / (sqrt(v) + eps): <= 0 can divide by zero, and an eps near the gradients' own scale "
     "damps every update to about 0 (1e30 freezes training silently)"),
    ("optim.weight_decay", lambda v: 0 <= v <= 1, "a value in [0, 1], e.g. 0.01",
     "AdamW shrinks every weight by lr * weight_decay per step: negative grows the weights, above 1 is outside "
     "any recipe (0.01-0.1) and 1e30 turns the weights to inf"),
    ("dmd.guidance_scale", lambda v: 0 < v <= 100, "a value in (0, 100] (1 = no guidance, e.g. 2.0 or 8.0)",
     "the CFG scale omega of xr_u + omega (xr_c - xr_u): <= 0 removes or inverts the conditional pull, and beyond "
     "100 the guided x0 leaves the data's range by orders of magnitude (the teacher's report goes NaN)"),
    ("dmd.t_min", lambda v: 0 <= v <= 1, "a value in [0, 1], e.g. 0.02",
     "the re-noise range's low end as a fraction of the time axis"),
    ("dmd.t_max", lambda v: 0 <= v <= 1, "a value in [0, 1], e.g. 0.98",
     "the re-noise range's high end as a fraction of the time axis"),
    ("gan.generator_weight", lambda v: v >= 0, "a value >= 0", "a negative GAN weight trains against the GAN loss"),
    ("gan.critic_weight", lambda v: v >= 0, "a value >= 0", "a negative GAN weight trains against the GAN loss"),
    ("train.max_skipped_fraction", lambda v: 0 <= v <= 1, "a value in [0, 1], e.g. 0.1 (1 = never fail)",
     "the fraction of iterations with a skipped (NaN/inf) update above which a finished run fails instead of "
     "writing eval.json"),
)

# String choices: key -> (the choices, what the knob is).
_CHOICES = {
    "method": (("dmd2", "amd"), "the distillation method"),
    "dmd.normalizer": (("sample", "batch", "none"), "the DMD gradient's normaliser"),
    "amd.dsa_mode": (("soft", "hard"), "Dynamic Score Adaptation by the advantage (soft) or the zone mask (hard)"),
    "amd.rls_mode": (("soft", "hard"), "the RLS weights from the advantage (soft) or the zone mask (hard)"),
}

# True / False knobs.
_FLAGS = ("dmd.decoupled_normalizer", "reward.monitor", "gan.enabled", "checkpoint.async_save", "eval.at_end")

# String knobs (names and paths, '' = not set) with what they hold; the task checks the names it knows.
_STRINGS = {
    "experiment": "the task, a name of amd_jax.tasks",
    "schedule.name": "the noise schedule",
    "reward.name": "the reward model's name",
}

_MISSING = object()


def knob(c, key: str, default=_MISSING):
    """The value of the dotted `key` in config `c` (a ConfigDict or a flat dict of dotted keys); `default` when it
    is absent, or ConfigError naming the key when no default is given."""
    if isinstance(c, dict) and key in c:
        return c[key]
    node = c
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            if default is not _MISSING:
                return default
            raise ConfigError(f"{key} is missing from the config: every config starts from amd_jax.config.base() "
                              f"and its experiment's configs/NAME.py; set --config.{key} or add it there.") from None
    return node


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
    _check_magnitude(flatten(c.to_dict()))  # after every knob's own range, which names the range in its fix


def check_knobs(c, num_devices: int, num_processes: int = 1) -> None:
    """The checks every task shares (validate's, without the task's own): the knobs and the evaluators.

    Also logs a warning when eval.num_samples or log.sample_count is not a multiple of the global batch (the
    sampler drops the last partial batch), with the number of samples that will really be evaluated."""
    flat = flatten(c.to_dict())
    _check_finite(flat)
    _check_numbers(flat)
    check_table(flat, choices=_CHOICES, flags=_FLAGS, strings=_STRINGS)
    _check_choices(c)
    _check_timesteps(c)
    _check_layout(c)
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


def check_table(c, ints: dict | None = None, floats=(), choices: dict | None = None, flags=(),
                strings: dict | None = None, optional=()) -> None:
    """Check the knobs of `c` (a config or a flat dict of dotted keys) against tables in the formats above:
    `ints` {key: (lo, meaning) | (lo, hi, meaning)}, `floats` ((key, accepts, allowed, why), ...), `choices`
    {key: (choices, what)}, `flags` (keys of True / False knobs), `strings` {key: what}. Every key must be
    present unless it is in `optional` (then an absent one is skipped). Raises ConfigError for the first bad knob:
    its key, its value, why and the fix."""
    def value(key):  # (the value, absent and optional)
        v = knob(c, key, _MISSING) if key in optional else knob(c, key)
        return v, v is _MISSING

    for key, spec in (ints or {}).items():
        v, absent = value(key)
        if absent:
            continue
        lo, hi, meaning = spec if len(spec) == 3 else (spec[0], None, spec[1])
        if hi is None:
            need(is_int(v) and v >= lo,
                 f"{key}={v!r}: {meaning}; it must be an integer >= {lo}. Set --config.{key} to an integer >= {lo}.")
        else:
            need(is_int(v) and lo <= v <= hi, f"{key}={v!r}: {meaning}; it must be an integer in [{lo}, {hi}]. Set "
                                              f"--config.{key} to an integer in [{lo}, {hi}].")
    for key, ok, allowed, why in floats:
        v, absent = value(key)
        if not absent:
            need(is_real(v) and ok(v), f"{key}={v!r}: {why}. Set --config.{key} to {allowed}.")
    for key, (options, what) in (choices or {}).items():
        v, absent = value(key)
        if not absent:
            need(isinstance(v, str) and v in options,
                 f"{key}={v!r}: {what}: use " + " or ".join(f"--config.{key}={o}" for o in options) + ".")
    for key in flags:
        v, absent = value(key)
        if not absent:
            need(isinstance(v, bool), f"{key}={v!r}: a switch; set --config.{key}=True or --config.{key}=False.")
    for key, what in (strings or {}).items():
        v, absent = value(key)
        if not absent:
            need(isinstance(v, str), f"{key}={v!r}: {what}; give a string (--config.{key}=...; '' = not set).")


def need_input_path(c, key: str, what: str, required: bool = False, exists: bool = True,
                    several: bool = False) -> None:
    """`key` names a file or folder the run reads: a string, '' = not set (refused when `required`); with
    `exists`, a local one must exist (a URL such as gs:// or tfds:NAME is not checked here). `several`: a
    comma-separated list of paths, each checked."""
    from amd_jax import paths

    v = knob(c, key)
    need(isinstance(v, str), f"{key}={v!r}: {what}; give its path as a string (--config.{key}=PATH).")
    need(bool(v) or not required, f"{key} is empty: set --config.{key} to {what} (local or gs://).")
    if not (exists and v):
        return
    for p in [part.strip() for part in v.split(",")] if several else [v]:
        need(not p or paths.is_url(p) or os.path.exists(paths.absolute(p)),
             f"{key}={v!r}: {p} does not exist ({what}). Set --config.{key} to an existing path (local or gs://).")


def need_output_dir(c, key: str, what: str) -> None:
    """`key` names a folder the run creates or writes into ('' = its default place): it must be a string, and a
    local one must be, or be creatable as, a folder (its nearest existing ancestor is a folder)."""
    from amd_jax import paths

    v = knob(c, key)
    need(isinstance(v, str), f"{key}={v!r}: {what}; give a folder path as a string ('' = the default place).")
    if not v or paths.is_url(v):
        return
    p = paths.absolute(v)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    need(os.path.isdir(p), f"{key}={v!r}: {p} is not a folder, so {what} cannot be written there. Set "
                           f"--config.{key} to a folder path ('' = the default place).")


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


def _check_magnitude(flat: dict) -> None:
    """Every float leaf within +-FLOAT_MAX, also the knobs without a range of their own (a clip, a GAN weight, a
    std floor): no float knob of any task means anything at 1e30, and such a value multiplied into activations or
    gradients overflows float32 (max 3.4e38) far from the knob that caused it (grad_clip=1e30 = no clip: use 1e6)."""
    for key, value in flat.items():
        items = value if isinstance(value, (list, tuple)) else (value,)
        need(
            all(not isinstance(v, float) or abs(v) <= FLOAT_MAX for v in items),
            f"{key}={value!r}: no float knob means anything beyond +-{FLOAT_MAX:g} (multiplied into activations or "
            f"gradients it overflows float32 far from this knob). Set --config.{key} within +-{FLOAT_MAX:g}.",
        )


def _check_numbers(flat: dict) -> None:
    check_table(flat, ints=_INT_KNOBS, floats=_FLOAT_KNOBS)


def _check_choices(c) -> None:
    """The checks that relate several knobs (each knob's own type and range are checked before)."""
    need(c.dmd.t_min <= c.dmd.t_max,
         f"dmd.t_min={c.dmd.t_min} > dmd.t_max={c.dmd.t_max}: the re-noise range needs 0 <= t_min <= t_max <= 1; "
         "set --config.dmd.t_min and --config.dmd.t_max, e.g. 0.02 and 0.98.")
    _check_ca_timestep(c.dmd)
    a = c.amd
    need(a.dsa_mode != "soft" or a.s * a.adv_clip <= 1.0,
         f"amd.dsa_mode='soft' with s={a.s} and adv_clip={a.adv_clip}: alpha, beta = 1 -+ s a~ change sign for "
         "|a~| up to adv_clip; keep s * adv_clip <= 1 (--config.amd.s, --config.amd.adv_clip).")
    need(a.rls_mode != "soft" or a.rls_lambda * a.adv_clip < 1.0,
         f"amd.rls_mode='soft' with rls_lambda={a.rls_lambda} and adv_clip={a.adv_clip} can make weights <= 0: "
         "keep rls_lambda * adv_clip < 1 (--config.amd.rls_lambda, --config.amd.adv_clip).")
    prof = c.train.get("profile_steps", ())
    need(isinstance(prof, (tuple, list)) and (
        len(prof) == 0 or (len(prof) == 2 and all(is_int(v) for v in prof) and 0 <= prof[0] < prof[1])),
         f"train.profile_steps={prof!r}: give (first, last) iterations with 0 <= first < last, or () for no trace.")
    need(a.tau < a.adv_clip,
         f"amd.tau={a.tau} >= amd.adv_clip={a.adv_clip}: the advantage is clipped to >= -adv_clip, so a~ < -tau "
         "never holds and the Forbidden-Zone mask is always 0 (hard DSA and hard RLS silently off). "
         "Set --config.amd.tau below adv_clip, e.g. 0.5.")
    allowed = c.get("resume", {}).get("allow_changes", ())
    need(isinstance(allowed, (tuple, list)) and all(isinstance(k, str) for k in allowed),
         f"resume.allow_changes={allowed!r}: a tuple of dotted config keys or blocks, e.g. "
         "--config.resume.allow_changes=\"('optim.student_lr',)\", or () for none.")


def _check_ca_timestep(d) -> None:
    """dmd.ca_t_min/ca_t_max: both negative (the CA term at the DM term's t) or 0 <= ca_t_min <= ca_t_max <= 1."""
    lo, hi = d.ca_t_min, d.ca_t_max
    need(is_real(lo) and is_real(hi) and ((lo < 0 and hi < 0) or 0.0 <= lo <= hi <= 1.0),
         f"dmd.ca_t_min/ca_t_max={lo!r}/{hi!r}: give both as fractions of the time axis with 0 <= ca_t_min <= ca_t_max "
         "<= 1 (the CA term's own re-noise range, e.g. 0.5/0.98), or set both to -1 to use the DM term's t "
         "(--config.dmd.ca_t_min, --config.dmd.ca_t_max).")


def _check_timesteps(c) -> None:
    """student.timesteps lie on the schedule's time axis and strictly decrease (DMD2: noise first, e.g.
    (999, 749, 499, 249) on SDXL's DDPM axis; backward simulation walks them in order)."""
    from amd_jax.method.schedules import make_schedule

    kwargs = c.schedule.get("kwargs", {})
    need(hasattr(kwargs, "keys"), f"schedule.kwargs={kwargs!r}: give a dict of the schedule's parameters, e.g. {{}}.")
    kwargs = kwargs.to_dict() if hasattr(kwargs, "to_dict") else dict(kwargs)
    try:
        schedule = make_schedule(c.schedule.name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"schedule.name={c.schedule.name!r} / schedule.kwargs={kwargs}: {e}")
    ts = c.student.timesteps
    need(isinstance(ts, (tuple, list)),
         f"student.timesteps={ts!r}: give a tuple of timesteps, noise end first, e.g. (999,) or (1.0,).")
    ts = tuple(ts)
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
    end = schedule.num_timesteps - 1 if schedule.discrete else 1.0
    need(ts[0] == end,
         f"student.timesteps={ts}: the student's first step reads pure noise z ~ N(0, I) as x_t at timesteps[0] "
         f"(amd_jax/method/simulation.py), so timesteps[0] must be the {c.schedule.name!r} schedule's noise end "
         f"{end}: the student starts as a copy of the teacher, which never saw pure noise labelled t={ts[0]}. Set "
         f"--config.student.timesteps, e.g. ({end},).")


def _check_layout(c) -> None:
    """mesh.axes / mesh.batch_axes and sharding.rules by form (the mesh's sizes: _check_batch)."""
    from amd_jax.parallel.sharding import check_rules

    axes = c.mesh.axes
    need(isinstance(axes, (tuple, list)) and len(axes) > 0 and all(isinstance(a, str) and a for a in axes)
         and len(set(axes)) == len(axes),
         f"mesh.axes={axes!r}: give the mesh's axis names, distinct non-empty strings, e.g. ('data', 'fsdp').")
    batch = c.mesh.batch_axes
    need(isinstance(batch, (tuple, list)) and len(batch) > 0 and all(isinstance(a, str) and a in axes for a in batch),
         f"mesh.batch_axes={batch!r}: name the mesh axes the batch is split over, a non-empty subset of mesh.axes="
         f"{tuple(axes)}, e.g. ('data', 'fsdp').")
    check_rules(c.sharding.rules, tuple(axes))


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
