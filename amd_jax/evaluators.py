"""Evaluators with a cadence (big_vision's `evals={name: {type, every}}`): what the training loop evaluates, when,
on how many samples, and where the results go. The loop iterates `registry(config)`; nothing else decides.

Every evaluator NAME writes eval/NAME/<metric> into TensorBoard and metrics.jsonl and its images as eval/NAME/<image>
(the sample count is in the results files, not a curve). Two entries come from the long-standing keys, mapped here
and nowhere else:
  'samples'  every log.sample_every steps (0 = never) on min(eval.num_samples, log.sample_count) samples, seed 2024:
             eval/samples/<metric> (the training curves amd_jax/sweep.py reads) and samples/<image>_<step>.png
  'final'    after the last step when eval.at_end, on eval.num_samples samples, seed 777: eval.json (the numbers
             sweep.py tabulates), eval/final/<metric> and samples/<image>_final.png
`config.evals` adds more, name -> {type, every, at_end, num_samples, seed}: files samples/<name>_<image>_<step>.png,
and at the end eval_<name>.json. `type` names an evaluator the task offers ('task': its `evaluate`).
amd_jax.config.validate refuses an evaluator that cannot run (config/checks.py `check_evaluators`).
With an EMA student (student.ema_decay > 0) each evaluation also covers the EMA on the same noise and conditions
(eval/NAME/ema/<metric>, file suffix _ema, JSON keys ema_<metric>).
Each evaluation announces itself when it starts and logs its figures when it is done (amd_jax/phases.py).
"""

from __future__ import annotations

import dataclasses
import logging

from amd_jax import outputs, phases, writers
from amd_jax.config.checks import EVALUATOR_DEFAULTS as _DEFAULTS

log = logging.getLogger("amd_jax")

FINAL_SEED = 777  # the noise of the at-end evaluation; the offline evaluate.py uses the same


@dataclasses.dataclass(frozen=True)
class Evaluator:
    name: str
    type: str  # one of amd_jax.config.checks.EVALUATOR_TYPES ('task': Task.evaluate on fresh samples)
    num_samples: int  # fresh samples per evaluation (whole global batches: the sampler drops a partial one)
    seed: int  # of the samples' noise: the same at every evaluation, so a curve follows the student, not the noise
    every: int = 0  # evaluate after step s when s % every == 0; 0 = never during training
    at_end: bool = False  # evaluate once after the last step, into the results file `json`
    scalars: str = ""  # the prefix of its numbers and images in TensorBoard and metrics.jsonl (eval/<name>)
    images: str = ""  # the prefix of its PNG files in samples/
    json: str = ""  # the at-end results file in the workdir

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0


def registry(c) -> dict[str, Evaluator]:
    """name -> Evaluator: the two of the long-standing keys (when on), then config.evals' entries."""
    out = {}
    if c.log.sample_every:
        out["samples"] = Evaluator("samples", "task", min(c.eval.num_samples, c.log.sample_count), 2024,
                                   every=c.log.sample_every, scalars="eval/samples")
    if c.eval.at_end:
        out["final"] = Evaluator("final", "task", c.eval.num_samples, FINAL_SEED, at_end=True, scalars="eval/final",
                                 json="eval.json")
    for name, entry in c.get("evals", {}).items():
        e = {**_DEFAULTS, **entry}
        out[name] = Evaluator(name, e["type"], e["num_samples"], e["seed"], every=e["every"], at_end=e["at_end"],
                              scalars=f"eval/{name}", images=f"{name}_", json=f"eval_{name}.json")
    return out


def run(ev: Evaluator, session, gen, state, writer, step: int, final: bool = False) -> dict:
    """One evaluation of `ev` at `step`: the periodic kind, or with `final` the at-end kind (results file too).
    Returns the results as written: {metric or ema_<metric>: value, step, method, seed}. Every write is guarded
    (amd_jax/outputs.py): a folder that refuses one raises OutputError naming it and the cause."""
    results = {}
    n = ev.num_samples // session.c.global_batch * session.c.global_batch  # whole global batches
    students = "the student and its EMA" if session.ema else "the student"
    with phases.announced(f"Evaluation '{ev.name}' at step {step}: {n} samples of {students}") as note:
        with outputs.writing(session.workdir, "a first-use cache of the evaluation", only_write_errors=True):
            evaluated = _evaluate_students(session, gen, state, ev.num_samples, ev.seed, step)
        note["result"] = f"results in {ev.json}" if final else writers.fmt(curve_values(evaluated[0][1]))
    for tag, metrics, images in evaluated:
        pre = f"{ev.scalars}/{tag}/" if tag else f"{ev.scalars}/"
        writer.write_scalars(step, {f"{pre}{k}": v for k, v in curve_values(metrics).items()})
        writer.write_images(step, {f"{pre}{k}": writers.frame_strip(v) for k, v in images.items()})
        suffix = "final" if final else f"{step:07d}"
        for name, img in images.items():
            stem = session.workdir / "samples" / f"{ev.images}{_tagged(name, tag)}_{suffix}"
            with outputs.writing(session.workdir / "samples", "the samples"):
                writers.save_png(f"{stem}.png", writers.frame_strip(img))
                if img.ndim == 4:  # a video (grid) [T, H, W, C]: also the animation
                    writers.save_animation(f"{stem}.gif", img)
        results.update({_tagged_key(k, tag): v for k, v in metrics.items()})
    results.update(step=step, method=session.c.method, seed=session.c.seed)
    if final:
        with outputs.writing(session.workdir, ev.json):
            writers.save_eval_json(session.workdir / ev.json, results)
        log.info("%s: %s", "eval" if ev.name == "final" else f"eval {ev.name}", writers.fmt(results))
    return results


def curve_values(metrics: dict) -> dict[str, float]:
    """The metrics that are curves: the numbers, less the sample count (a setting, kept in the results files)."""
    return {k: float(v) for k, v in metrics.items() if writers.is_number(v) and k != "num_samples"}


def _evaluate_students(session, gen, state, n: int, seed: int, step: int):
    """[(tag, metrics, images)] of the raw student (tag '') and, when the state has one, its EMA (tag 'ema'): n
    samples each from the same seed, so the two are compared on the same noise and conditions."""
    students = [("", state.student)] + ([("ema", state.student_ema)] if session.ema else [])
    title = f"{session.c.method} step {step}"
    return [(tag, *session.evaluate(gen, params, n, seed=seed, title=f"{title} {tag}".strip()))
            for tag, params in students]


def _tagged(name: str, tag: str) -> str:
    """A file name of the EMA's images: samples -> samples_ema."""
    return f"{name}_{tag}" if tag else name


def _tagged_key(key: str, tag: str) -> str:
    """A results key of the EMA's metrics: fid -> ema_fid."""
    return f"{tag}_{key}" if tag else key
