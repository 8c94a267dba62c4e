"""Config checks several tasks share (each task's `check` calls those it needs; amd_jax.config.validate runs it once,
before anything is built): the first-use teacher block (`teacher.*`, amd_jax/tasks/teacher.py), the prediction type
against the schedule, and the number of samples of each class an evaluation sees."""

from __future__ import annotations

from amd_jax.config.checks import SEED_MAX, check_table, is_real, knob, need, need_output_dir

# amd_jax/tasks/teacher.py trains in chunks of this many steps (one lax.scan or one loop each, chunk c seeded by
# teacher.seed + c + 1); teacher.steps must be a whole number of them (the chunks handle no remainder, and the
# teachers already trained must stay bit-identical).
TEACHER_CHUNK = 100

_TEACHER_INTS = {
    "teacher.steps": (TEACHER_CHUNK, f"the teacher's training steps, a multiple of {TEACHER_CHUNK} (it trains in "
                                     f"chunks of {TEACHER_CHUNK}; fewer would train nothing)"),
    "teacher.batch_size": (1, "the teacher's training batch (0 trains nothing: an untrained teacher)"),
    "teacher.seed": (0, SEED_MAX, "the seed of the teacher's init and of its training chunks"),
}
_TEACHER_FLOATS = (
    ("teacher.lr", lambda v: 0 < v <= 1, "a value in (0, 1], e.g. 2e-3",
     "Adam's peak learning rate for the teacher (cosine decay): <= 0 never trains it or ascends the loss, above 1 "
     "each step moves the weights by more than their own scale (1e30 saves a NaN teacher)"),
    ("teacher.label_dropout", lambda v: 0 <= v < 1, "a value in [0, 1), e.g. 0.1",
     "the fraction of training labels replaced by the null label, which trains CFG's unconditional branch: 1 or "
     "more never trains the conditional one"),
)


def check_teacher(config) -> None:
    """The `teacher` block of a task whose teacher is trained on first use (toy2d, zones2d, digits / MNIST)."""
    check_table(config, ints=_TEACHER_INTS, floats=_TEACHER_FLOATS, flags=("teacher.train_if_missing",))
    steps = config.teacher.steps
    need(steps % TEACHER_CHUNK == 0,
         f"teacher.steps={steps}: the teacher trains in chunks of {TEACHER_CHUNK} steps and would silently skip the "
         f"last {steps % TEACHER_CHUNK}. Set --config.teacher.steps to a multiple of {TEACHER_CHUNK}, e.g. "
         f"{steps // TEACHER_CHUNK * TEACHER_CHUNK} or {(steps // TEACHER_CHUNK + 1) * TEACHER_CHUNK}.")
    omega = config.dmd.guidance_scale
    need(config.teacher.label_dropout > 0 or omega == 1,
         f"teacher.label_dropout=0 with dmd.guidance_scale={omega}: without label dropout the teacher never learns "
         "the unconditional branch that CFG extrapolates from. Set --config.teacher.label_dropout=0.1, or "
         "--config.dmd.guidance_scale=1 (no guidance).")
    need_output_dir(config, "teacher.dir", "the teacher's checkpoint and report")


def check_prediction_type(config, key: str = "model.prediction_type") -> None:
    """The network's parameterisation: a known one, that the schedule can convert at every student timestep."""
    from amd_jax.method.schedules import PREDICTION_TYPES

    p = knob(config, key)
    need(isinstance(p, str) and p in PREDICTION_TYPES,
         f"{key}={p!r}: what the network predicts; use one of {PREDICTION_TYPES} (--config.{key}=velocity).")
    name = config.schedule.name
    need(p != "velocity" or name != "ddpm",
         f"{key}='velocity' with schedule.name='ddpm': the discrete DDPM schedule has no time derivative; use "
         f"--config.{key}=eps (or x0, v), or a continuous schedule (rectified_flow, vp).")
    ones = [t for t in config.student.timesteps if is_real(t) and t >= 1.0]
    need(p != "eps" or name != "rectified_flow" or not ones,
         f"{key}='eps' with schedule.name='rectified_flow' and student.timesteps={tuple(config.student.timesteps)}: "
         "at t = 1 the data's weight alpha(t) is 0, so x0 = (x_t - sigma eps) / alpha divides by zero. Use "
         f"--config.{key}=velocity (or x0, v).")


def evaluated_counts(config) -> dict[str, int]:
    """{knob: the number of samples an evaluation it sets really generates}: whole global batches (Session.generate
    drops the last partial one) of eval.num_samples, the in-training samples (log.sample_count, at most
    eval.num_samples) and every config.evals entry."""
    bsz = config.global_batch
    out = {"eval.num_samples": config.eval.num_samples // bsz * bsz}
    if config.log.sample_every:
        out["log.sample_count"] = min(config.eval.num_samples, config.log.sample_count) // bsz * bsz
    for name, entry in config.get("evals", {}).items():
        out[f"evals.{name}.num_samples"] = entry["num_samples"] // bsz * bsz
    return out


def need_per_class(config, num_classes: int, per_class: int, why: str, counts: dict[str, int] | None = None,
                   classes: str = "") -> None:
    """Every evaluation's samples cycle through the classes (tasks.common.class_labels): each class must get at
    least `per_class` of them (`why`: what needs that many; `counts`: {knob: samples}, by default
    `evaluated_counts`; `classes`: how the message names the classes)."""
    classes = classes or f"data.num_classes={num_classes}"
    for key, n in (counts if counts is not None else evaluated_counts(config)).items():
        need(n // num_classes >= per_class,
             f"{key}: {n} evaluated samples over {classes} classes give {n // num_classes} per "
             f"class; {why} needs at least {per_class} per class. Raise --config.{key} to "
             f"{per_class * num_classes} or more (a multiple of global_batch={config.global_batch}).")
