"""Defaults shared by every experiment; a config file in configs/ starts from `base()` and overrides.

Every [choice] of docs/METHOD.md is a knob here (amd.*). `validate` refuses a config that cannot run, before anything
is compiled, with the fix in the message; `check_resume` refuses to resume a checkpoint with a config that would
train a different experiment.
"""

from __future__ import annotations

import json
import logging
import math
import numbers

import ml_collections

from amd_jax.errors import ConfigError
from amd_jax.paths import is_path_key

log = logging.getLogger(__name__)


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = ""  # the task: a name of amd_jax.tasks (toy2d, digits, mnist, sdxl)
    c.method = "amd"  # 'dmd2' | 'amd'
    c.seed = 0
    c.total_steps = 1000
    c.global_batch = 128

    c.schedule = ml_collections.ConfigDict({"name": "ddpm", "kwargs": {}})
    c.student = ml_collections.ConfigDict({"timesteps": (999,)})  # DMD2 4-step: (999, 749, 499, 249)
    # ema_decay: an exponential moving average of the student, updated with every applied generator update and
    # evaluated beside it (ema/ metrics, ema_* keys in eval.json); 0 = off, e.g. 0.999 for long runs
    c.student.ema_decay = 0.0

    c.dmd = ml_collections.ConfigDict()
    c.dmd.guidance_scale = 8.0  # omega, DMD2 convention xr_u + omega (xr_c - xr_u)
    c.dmd.t_min = 0.02  # re-noise range as fractions of the time axis (DMD2: 20..980 of 1000)
    c.dmd.t_max = 0.98
    c.dmd.ttur = 5  # critic steps per generator step
    c.dmd.normalizer = "sample"  # DMD2's per-sample mean|x - xr_cfg|; 'batch' | 'none' for low-dimensional data
    # Decoupled DMD (docs/METHOD.md section 4): the DM and CA terms each over their own normaliser, and the CA term
    # at its own re-noise timestep t_ca in [ca_t_min, ca_t_max] (negative = the DM term's t, as DMD2).
    c.dmd.decoupled_normalizer = False
    c.dmd.ca_t_min = -1.0
    c.dmd.ca_t_max = -1.0

    c.amd = ml_collections.ConfigDict()
    c.amd.s = 0.5  # DSA strength: alpha, beta in [1 - s, 1 + s]
    c.amd.dsa_mode = "soft"  # 'soft' (advantage) | 'hard' (zone mask)
    c.amd.tau = 0.5  # zone mask m = 1[a~ < -tau]
    c.amd.group_size = 1  # K samples per prompt; 1 = the whole global batch is one group
    c.amd.std_floor = 0.0  # floor on std_g
    c.amd.adv_eps = 1e-6
    c.amd.adv_clip = 1.0
    c.amd.rls_lambda = 1.0  # Repulsive Landscape Sharpening strength
    c.amd.rls_mode = "hard"  # 'hard': w = 1 + lambda m | 'soft': w = 1 - lambda a~

    # monitor: compute rewards for dmd2 too; chunks: the reward (decode + score) in that many sequential pieces of
    # the batch, each holding rows of every device (peak memory / chunks, the same FLOPs; batching.sequential_chunks)
    c.reward = ml_collections.ConfigDict({"name": "", "monitor": True, "chunks": 1})

    c.gan = ml_collections.ConfigDict({"enabled": False, "generator_weight": 5e-3, "critic_weight": 1e-2})

    c.optim = ml_collections.ConfigDict()
    c.optim.student_lr = 5e-7
    c.optim.critic_lr = 5e-7
    c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
    c.optim.weight_decay = 0.01
    c.optim.warmup_steps = 500
    c.optim.grad_clip = 10.0

    c.mesh = ml_collections.ConfigDict({"axes": ("data", "fsdp"), "shape": (-1, 1)})
    c.sharding = ml_collections.ConfigDict({"rules": (), "fsdp_min_size": 2**14})

    # max_nonfinite: stop after this many consecutive iterations whose update was skipped for a NaN/inf loss or
    # gradient (steps.py skips them; the newest checkpoint then still holds the last finite state);
    # profile_steps: (first, last) iterations traced by jax.profiler into WORKDIR/profile; () = off;
    # microbatches: the generator and critic losses and gradients accumulated over that many sequential pieces of
    # the batch (gradient accumulation: the same update, ~1/microbatches of the activation memory; a micro-batched
    # generator step runs the student's last step once more; steps.py)
    c.train = ml_collections.ConfigDict({"max_nonfinite": 20, "profile_steps": (), "microbatches": 1})
    c.checkpoint = ml_collections.ConfigDict({"every": 500, "keep": 3, "async_save": True})
    # sample_every: images + the experiment's metrics on `sample_count` fresh samples (the in-training curves)
    c.log = ml_collections.ConfigDict({"every": 50, "sample_every": 500, "sample_count": 1024})
    c.eval = ml_collections.ConfigDict({"num_samples": 4096, "at_end": True})
    # more evaluators beside those two (amd_jax/evaluators.py): name -> {type, every, at_end, num_samples, seed}
    c.evals = ml_collections.ConfigDict()
    # Resuming a workdir whose checkpoint was trained with other values of training-semantics keys is refused
    # (check_resume); list the dotted keys or blocks changed on purpose, e.g. ('optim.student_lr',).
    c.resume = ml_collections.ConfigDict({"allow_changes": ()})
    return c


def teacher(steps: int, batch_size: int, lr: float, label_dropout: float = 0.1, seed: int = 0):
    """The `teacher` block of small experiments (amd_jax/tasks/teacher.py): a teacher trained on first use.

    dir '' = WORKDIR/teacher; a shared path lets several runs (a sweep) reuse one teacher."""
    return ml_collections.ConfigDict({"dir": "", "train_if_missing": True, "steps": steps, "batch_size": batch_size,
                                      "lr": lr, "label_dropout": label_dropout, "seed": seed})


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


def validate(c, num_devices: int, num_processes: int = 1) -> None:
    """Every check that needs no compilation. Raises ConfigError naming the key, the value, why and the fix.

    Also logs a warning when eval.num_samples or log.sample_count is not a multiple of the global batch (the
    sampler drops the last partial batch), with the number of samples that will really be evaluated."""
    from amd_jax import evaluators as evals  # it reads this module's helpers

    flat = flatten(c.to_dict())
    _check_finite(flat)
    _check_numbers(flat)
    _check_choices(c)
    _check_timesteps(c)
    _check_batch(c, num_devices, num_processes)
    evals.check(c)
    for line in sample_count_notes(c):
        log.warning(line)


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_finite(flat: dict) -> None:
    """Every float leaf (and every float inside a tuple leaf) is finite: NaN compares False and silently turns
    checks and masks off (amd.tau = nan: no sample is ever flagged), inf overflows."""
    for key, value in flat.items():
        items = value if isinstance(value, (list, tuple)) else (value,)
        _need(
            all(not _is_real(v) or math.isfinite(v) for v in items),
            f"{key}={value!r}: every float knob must be finite (NaN compares False and silently switches the "
            f"computation it feeds off; inf overflows). Set --config.{key} to a finite number.",
        )


def _check_numbers(flat: dict) -> None:
    for key, (lo, meaning) in _INT_KNOBS.items():
        v = flat[key]
        _need(_is_int(v) and v >= lo,
              f"{key}={v!r}: {meaning}; it must be an integer >= {lo}. Set --config.{key} to an integer >= {lo}.")
    for key, ok, allowed, why in _FLOAT_KNOBS:
        v = flat[key]
        _need(_is_real(v) and ok(v), f"{key}={v!r}: {why}. Set --config.{key} to {allowed}.")


def _check_choices(c) -> None:
    """String choices and the checks that relate several knobs."""
    _need(c.method in ("dmd2", "amd"), f"method={c.method!r}: use --config.method=dmd2 or --config.method=amd.")
    _need(c.dmd.normalizer in ("sample", "batch", "none"),
          f"dmd.normalizer={c.dmd.normalizer!r}: use 'sample', 'batch' or 'none'.")
    _need(0.0 <= c.dmd.t_min <= c.dmd.t_max <= 1.0,
          f"dmd.t_min/t_max={c.dmd.t_min}/{c.dmd.t_max}: need 0 <= t_min <= t_max <= 1.")
    _check_ca_timestep(c.dmd)
    _need(c.amd.dsa_mode in ("soft", "hard"), f"amd.dsa_mode={c.amd.dsa_mode!r}: use 'soft' or 'hard'.")
    _need(c.amd.rls_mode in ("soft", "hard"), f"amd.rls_mode={c.amd.rls_mode!r}: use 'soft' or 'hard'.")
    a = c.amd
    _need(a.dsa_mode != "soft" or a.s * a.adv_clip <= 1.0,
          f"amd.dsa_mode='soft' with s={a.s} and adv_clip={a.adv_clip}: alpha, beta = 1 -+ s a~ change sign for "
          "|a~| up to adv_clip; keep s * adv_clip <= 1.")
    _need(a.rls_mode != "soft" or a.rls_lambda * a.adv_clip < 1.0,
          f"amd.rls_mode='soft' with rls_lambda={a.rls_lambda} and adv_clip={a.adv_clip} can make weights <= 0: "
          "keep rls_lambda * adv_clip < 1.")
    prof = tuple(c.train.get("profile_steps", ()))
    _need(prof == () or (len(prof) == 2 and all(_is_int(v) for v in prof) and 0 <= prof[0] < prof[1]),
          f"train.profile_steps={prof}: give (first, last) iterations with 0 <= first < last, or () for no trace.")
    _need(a.tau < a.adv_clip,
          f"amd.tau={a.tau} >= amd.adv_clip={a.adv_clip}: the advantage is clipped to >= -adv_clip, so a~ < -tau "
          "never holds and the Forbidden-Zone mask is always 0 (hard DSA and hard RLS silently off). "
          "Set --config.amd.tau below adv_clip, e.g. 0.5.")


def _check_ca_timestep(d) -> None:
    """dmd.ca_t_min/ca_t_max: both negative (the CA term at the DM term's t) or 0 <= ca_t_min <= ca_t_max <= 1."""
    lo, hi = d.ca_t_min, d.ca_t_max
    _need(_is_real(lo) and _is_real(hi) and ((lo < 0 and hi < 0) or 0.0 <= lo <= hi <= 1.0),
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
    _need(len(ts) >= 1, "student.timesteps is empty: give at least one timestep, e.g. (999,).")
    if schedule.discrete:
        hi = schedule.num_timesteps - 1
        ok = all(_is_real(t) and float(t).is_integer() and 0 <= t <= hi for t in ts)
        axis = f"is discrete: integers in [0, {hi}] (num_timesteps - 1), e.g. ({hi},) or 4 steps " \
               f"({hi}, {hi * 3 // 4}, {hi // 2}, {hi // 4})"
    else:
        ok = all(_is_real(t) and 0.0 <= t <= 1.0 for t in ts)
        axis = "is continuous: t in [0, 1] with 1 = pure noise, e.g. (1.0,) or 4 steps (1.0, 0.75, 0.5, 0.25)"
    _need(ok, f"student.timesteps={ts}: the {c.schedule.name!r} schedule {axis}. Set --config.student.timesteps.")
    _need(all(a > b for a, b in zip(ts, ts[1:])),
          f"student.timesteps={ts}: a multi-step student starts at the noise end and each step goes closer to the "
          f"data, so the timesteps must strictly decrease without duplicates (DMD2's convention, e.g. "
          f"{tuple(sorted(set(ts), reverse=True))}).")


def _check_batch(c, num_devices: int, num_processes: int) -> None:
    from amd_jax.parallel.mesh import resolve_mesh_shape

    shape = dict(zip(c.mesh.axes, resolve_mesh_shape(c.mesh.axes, c.mesh.shape, num_devices)))
    _need("data" in shape, f"mesh.axes={tuple(c.mesh.axes)} has no 'data' axis.")
    dp = shape.get("data", 1) * shape.get("fsdp", 1)
    _need(
        c.global_batch % dp == 0,
        f"global_batch={c.global_batch} is not divisible by the data-parallel size data*fsdp={dp} of mesh {shape}: "
        f"set --config.global_batch to a multiple of {dp}.",
    )
    _need(
        c.global_batch % num_processes == 0,
        f"global_batch={c.global_batch} is not divisible by the {num_processes} processes.",
    )
    k = c.amd.group_size
    _need(
        k in (0, 1) or c.global_batch % k == 0,
        f"amd.group_size={k} does not divide global_batch={c.global_batch}: choose K with global_batch % K == 0.",
    )
    chunks, per_device = c.reward.chunks, c.global_batch // dp
    _need(
        per_device % chunks == 0,
        f"reward.chunks={chunks} does not divide the {per_device} samples per device (global_batch={c.global_batch} "
        f"over data*fsdp={dp}): choose a divisor of {per_device}, so that every piece holds rows of every device.",
    )
    micro = c.train.microbatches
    _need(
        per_device % micro == 0,
        f"train.microbatches={micro} does not divide the {per_device} samples per device (global_batch="
        f"{c.global_batch} over data*fsdp={dp}): choose a divisor of {per_device}, so that every micro-batch holds "
        "rows of every device.",
    )
    _need(
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


# Keys whose value may differ between a checkpoint and the run resuming it: they do not change what is trained.
_RESUME_FREE = (
    "total_steps",  # extending a finished run is normal
    "log",  # what is logged, how often
    "eval",  # what is evaluated (samples, evaluators' caches), not what is trained
    "evals",  # the evaluators and their cadence
    "checkpoint",  # how often, how many kept, async or not
    "mesh",  # the layout: restoring onto another mesh is a feature (tests/test_restore_mesh.py)
    "sharding",
    "reward.monitor",  # dmd2 only logs rewards with it: stop-gradient, the updates are the same
    "reward.chunks",  # how the same rewards are computed (memory), not what they are
    "teacher.train_if_missing",  # what to do without a teacher; a resumed run's teacher exists
    "train.max_nonfinite",  # when to give up on a diverging run, not what an update does
    "train.profile_steps",  # what is traced, not what is trained
    "train.microbatches",  # the same update computed in pieces (memory), up to float rounding
    "model.unet_remat",  # what the backward pass recomputes, not what it computes
    "model.unet_attention",  # the attention kernel (XLA or Pallas flash): the same function, another program
    "resume",  # this check's own setting
)


# Keys added after checkpoints were written -> the value that reproduces the code before them. A saved (or current)
# config without such a key ran with this value, so check_resume reads the key's absence as it.
_ADDED_DEFAULTS = {
    "dmd.decoupled_normalizer": False,
    "dmd.ca_t_min": -1.0,
    "dmd.ca_t_max": -1.0,
    "student.ema_decay": 0.0,  # compared (not _RESUME_FREE): it changes the state and what eval.json's ema_* mean
}


def _under(key: str, blocks) -> bool:
    """`key` is one of `blocks` or lies below one (dotted prefixes)."""
    return any(key == b or key.startswith(b + ".") for b in blocks)


def check_resume(saved: dict, current: dict, step: int) -> None:
    """Refuse to resume the checkpoint at `step` (written with config `saved`, its meta["config"]) with the config
    `current` (config.to_dict()) when that would train another experiment, or when nothing is left to train.

    Compared: every key except the _RESUME_FREE ones (total_steps, log.*, eval.*, evals.*, checkpoint.*, mesh.*,
    sharding.*, reward.monitor, teacher.train_if_missing, train.max_nonfinite, train.profile_steps, resume.*) and the
    path-valued keys (paths.is_path_key: teacher.dir, data.path, model.path, ... may be moved, and are spelled
    relative or absolute).
    All the others (method, seed, experiment, schedule, student, model, data, dmd, amd, gan, optim, reward.name,
    teacher.*) set the updates, the data stream or what eval.json is labelled with; when the checkpoint's state has the same shapes, a
    change would silently continue a different experiment (student.ema_decay: a changed decay would report an EMA
    that mixes two averages under one name). A key present on one side only is a difference (a knob added by newer
    code), except the _ADDED_DEFAULTS keys, whose absence means the value the older code ran.
    `current`'s resume.allow_changes lists keys or blocks (e.g. 'optim') changed on purpose. Then: a checkpoint
    past total_steps is refused; at total_steps the run is finished (logged).
    """
    old, new = ({**_ADDED_DEFAULTS, **flatten(_json(d))} for d in (saved, current))
    changed = _semantic_changes(old, new, tuple(new.get("resume.allow_changes") or ()))
    _need(not changed, f"The checkpoint at step {step} was trained with other values of {len(changed)} "
                       "training-semantics key(s):\n  "
                       + "\n  ".join(f"{k}: {old.get(k, _ABSENT)!r} -> {new.get(k, _ABSENT)!r}" for k in changed)
                       + "\nResuming would silently continue a different experiment. Use a new --workdir, or the "
                       "checkpoint's values; to change them on purpose, add --config.resume.allow_changes=\"("
                       + " ".join(f"{k!r}," for k in changed) + ")\". Nothing was changed in the checkpoints.")
    total = current["total_steps"]
    _need(step <= total, f"The checkpoint is at step {step} > total_steps={total}: nothing to train. Raise "
                         f"--config.total_steps above {step} to continue this run, or use a new --workdir.")
    if step == total:
        log.info("The checkpoint is at step %d = total_steps: training is already finished, no step will run "
                 "(with eval.at_end the final evaluation runs again).", step)


_ABSENT = "<absent>"


def _semantic_changes(old: dict, new: dict, allowed: tuple) -> list[str]:
    """The sorted flat keys whose values differ, leaving out _RESUME_FREE, path-valued and `allowed` keys."""
    unknown = [a for a in allowed if not any(_under(k, (a,)) for k in {*old, *new})]
    _need(not unknown, f"resume.allow_changes={allowed}: {unknown} name no config key. Give dotted keys or blocks, "
                       "e.g. --config.resume.allow_changes=\"('optim.student_lr', 'amd')\".")
    return [k for k in sorted({*old, *new}) if old.get(k, _ABSENT) != new.get(k, _ABSENT)
            and not _under(k, _RESUME_FREE + allowed) and not is_path_key(k)]


def _json(d: dict) -> dict:
    """As the checkpoint's meta JSON stores it (tuples become lists), so that saved and current compare equal."""
    return json.loads(json.dumps(d, default=str))


def load(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Load configs/NAME.py's get_config() from a file path (as --config does) and apply dotted overrides."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("amd_jax_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"Unknown config key {key!r}.")
        node[leaf] = value
    return config
