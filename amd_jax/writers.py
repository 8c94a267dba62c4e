"""Metric output through clu's metric writers: TensorBoard event files (tensorboard's own writer, no TensorFlow) and
metrics.jsonl (`create_writer`), the console (`setup_logging`, `step_line`), PNG and JSON files.

Only process 0 writes; the other processes get a writer whose methods do nothing.
"""

from __future__ import annotations

import io
import json
import logging
import time

import jax
import numpy as np
from etils import epath
from PIL import Image

from amd_jax import caches, outputs
from amd_jax.clu_lib import MetricWriter, asynclib, metric_writers, periodic_actions
from amd_jax.errors import OutputError

log = logging.getLogger("amd_jax")


def setup_logging():
    """INFO for amd_jax on stdout; libraries (absl, jax, orbax) only from WARNING up."""
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    for noisy in ("absl", "jax", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    outputs.quiet_storage_noise()  # a full or read-only folder: amd_jax's one line, not Orbax's tracebacks
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("amd_jax").setLevel(logging.INFO)
    except ImportError:
        pass


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class TensorBoardWriter(MetricWriter):
    """clu's MetricWriter interface over TensorBoard event files in `logdir`, written by tensorboard's own
    EventFileWriter (no TensorFlow): scalars, images (PNG), texts, and the hparams as the text 'config'.

    Every write is guarded (amd_jax/outputs.py): a folder that refuses it raises OutputError naming the folder and
    the cause (the EventFileWriter writes in a background thread: its failure surfaces at the next write, flush or
    close). Videos, audio, histograms and raw summaries are not written by amd_jax: NotImplementedError."""

    def __init__(self, logdir):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        self.logdir = str(logdir)
        with self._guard():
            epath.Path(logdir).mkdir(parents=True, exist_ok=True)
            self._writer = EventFileWriter(self.logdir)

    def _guard(self):
        return outputs.writing(self.logdir, "TensorBoard events")

    def _add(self, step: int, values):
        summary = self._summary_pb2.Summary(value=values)
        with self._guard():
            self._writer.add_event(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def write_scalars(self, step: int, scalars):
        S = self._summary_pb2.Summary
        self._add(step, [S.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()])

    def write_images(self, step: int, images):
        S = self._summary_pb2.Summary
        vals = []
        for k, img in images.items():
            h, w = img.shape[:2]
            c = 1 if img.ndim == 2 else img.shape[2]
            vals.append(S.Value(tag=k, image=S.Image(height=h, width=w, colorspace=c,
                                                     encoded_image_string=png_bytes(img))))
        self._add(step, vals)

    def write_texts(self, step: int, texts):
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

        S, pb = self._summary_pb2.Summary, self._summary_pb2
        meta = pb.SummaryMetadata(plugin_data=pb.SummaryMetadata.PluginData(plugin_name="text"))
        self._add(step, [S.Value(tag=k, metadata=meta, tensor=tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[str(v).encode()], tensor_shape=tensor_shape_pb2.TensorShapeProto()))
            for k, v in texts.items()])

    def write_hparams(self, hparams):
        self.write_texts(0, {"config": "```\n" + json.dumps(hparams, indent=1, default=str) + "\n```"})

    def write_summaries(self, step, values, metadata=None):
        raise NotImplementedError("TensorBoardWriter writes scalars, images, texts and hparams only.")

    def write_videos(self, step, videos):
        raise NotImplementedError("TensorBoardWriter writes scalars, images, texts and hparams only.")

    def write_audios(self, step, audios, *, sample_rate):
        raise NotImplementedError("TensorBoardWriter writes scalars, images, texts and hparams only.")

    def write_histograms(self, step, arrays, num_buckets=None):
        raise NotImplementedError("TensorBoardWriter writes scalars, images, texts and hparams only.")

    def flush(self):
        with self._guard():
            self._writer.flush()

    def close(self):
        with self._guard():
            self._writer.close()


class JsonlWriter(MetricWriter):
    """clu's MetricWriter interface over one JSON-lines file: each write_scalars call appends {"step": ..., name:
    value, ...} (json_text: a NaN is null with a note), the plain-text copy of the curves that amd_jax/sweep.py reads
    (`read_jsonl`; no TensorBoard reader needed). Images, texts, hparams and the rest are not copied there."""

    def __init__(self, path):
        self.path = epath.Path(path)

    def write_scalars(self, step: int, scalars):
        line = json_text({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n"
        with outputs.writing(self.path.parent, self.path.name), self.path.open("a") as f:
            f.write(line)

    def write_images(self, step, images):
        pass

    def write_texts(self, step, texts):
        pass

    def write_hparams(self, hparams):
        pass

    def write_summaries(self, step, values, metadata=None):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def flush(self):
        pass

    def close(self):
        pass


class OutputErrors(MetricWriter):
    """Around clu's AsyncMultiWriter: a write that failed in its background thread reaches the loop as clu's
    AsyncError (at the next write or at flush/close, wrapping the original); this raises the OutputError it wraps
    (the one line naming the folder and the cause), so the loop's guards see what a synchronous write raises."""

    def __init__(self, writer: MetricWriter):
        self._writer = writer

    def _call(self, name, *args, **kwargs):
        try:
            return getattr(self._writer, name)(*args, **kwargs)
        except asynclib.AsyncError as e:
            raise _wrapped_output_error(e) or e

    def write_scalars(self, step, scalars):
        self._call("write_scalars", step, scalars)

    def write_images(self, step, images):
        self._call("write_images", step, images)

    def write_texts(self, step, texts):
        self._call("write_texts", step, texts)

    def write_hparams(self, hparams):
        self._call("write_hparams", hparams)

    def write_summaries(self, step, values, metadata=None):
        self._call("write_summaries", step, values, metadata)

    def write_videos(self, step, videos):
        self._call("write_videos", step, videos)

    def write_audios(self, step, audios, *, sample_rate):
        self._call("write_audios", step, audios, sample_rate=sample_rate)

    def write_histograms(self, step, arrays, num_buckets=None):
        self._call("write_histograms", step, arrays, num_buckets)

    def flush(self):
        self._call("flush")

    def close(self):
        self._call("close")


def _wrapped_output_error(e: BaseException) -> OutputError | None:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OutputError):
            return e
        e = e.__cause__ or e.__context__
    return None


class ScalarsOnly(MetricWriter):
    """A MetricWriter that takes scalars only (its subclass's write_scalars): any other kind of write is refused;
    flush and close do nothing (the writer it feeds, if any, is its owner's to flush and close)."""

    def _refuse(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} takes scalars only.")

    write_images = write_texts = write_videos = write_audios = write_hparams = _refuse
    write_summaries = write_histograms = _refuse

    def flush(self):
        pass

    def close(self):
        pass


def create_writer(workdir, asynchronous: bool = False, enabled: bool | None = None) -> MetricWriter:
    """The run's metric writer, like clu's create_default_writer: on process 0 (or with `enabled`) TensorBoard
    events in WORKDIR/tensorboard and WORKDIR/metrics.jsonl through clu's MultiWriter; on the other processes a
    writer that writes nothing (clu's MultiWriter of none). The console line is the loop's own (a chosen few
    metrics), not clu's LoggingWriter (every scalar).
    Synchronous by default: the EventFileWriter already writes in its own thread and a metrics.jsonl line takes
    microseconds, and a failed write then raises OutputError at that very write, so the loop saves the state of that
    step and stops (tests/test_outputs.py). `asynchronous=True`: clu's AsyncMultiWriter (the PNG encoding off the
    loop's thread); a failure then surfaces at the next write or at flush/close, still as OutputError."""
    enabled = jax.process_index() == 0 if enabled is None else enabled
    if not enabled:
        return metric_writers.MultiWriter([])
    workdir = epath.Path(workdir)
    backends = [TensorBoardWriter(workdir / "tensorboard"), JsonlWriter(workdir / "metrics.jsonl")]
    if not asynchronous:
        return metric_writers.MultiWriter(backends)
    return OutputErrors(metric_writers.AsyncMultiWriter(backends))


def save_png(path, image: np.ndarray):
    """Process 0 writes `image` as a PNG, atomically (a reader never sees half a file)."""
    if jax.process_index() == 0:
        caches.atomic_write_bytes(path, png_bytes(image))


def animation_bytes(frames: np.ndarray, fps: float = 8.0) -> bytes:
    """`frames` [T, H, W] or [T, H, W, 1 | 3] uint8 as an animated GIF that loops (Pillow's own encoder: no ffmpeg
    or imageio needed; GIF's palette is exact for grey and close for colour). Each frame shows 1/fps seconds; Pillow
    stores a run of identical frames (a frozen stretch) as one frame shown that much longer, so playback is exact."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] not in (1, 3)):
        raise ValueError(f"animation frames must be uint8 [T, H, W] or [T, H, W, 1|3]; got {frames.dtype} "
                         f"{frames.shape}")
    images = [Image.fromarray(f[..., 0] if f.ndim == 3 and f.shape[-1] == 1 else f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return buf.getvalue()


def frame_strip(image: np.ndarray) -> np.ndarray:
    """An image [H, W(, C)] unchanged; a video [T, H, W, C] as its frames side by side [H, T * W, C] (what
    TensorBoard and the PNG show of a video sample; the GIF beside it plays it)."""
    image = np.asarray(image)
    return np.concatenate(list(image), axis=1) if image.ndim == 4 else image


def save_animation(path, frames: np.ndarray, fps: float = 8.0):
    """Process 0 writes `frames` as an animated GIF (`animation_bytes`), atomically: a video sample next to its
    frame-strip PNG (TensorBoard shows the strip)."""
    if jax.process_index() == 0:
        caches.atomic_write_bytes(path, animation_bytes(frames, fps))


NONFINITE = "nonfinite"  # the note `json_text` adds: {key: "nan" | "inf" | "-inf"} for each value written as null


def json_text(obj, **kwargs) -> str:
    """`obj` as valid JSON (json.dumps' `kwargs`): a NaN or an infinity, which json.dumps would write as a bare
    NaN / Infinity that strict JSON readers refuse, is written as null, and a dict gets the note
    {"nonfinite": {dotted key: "nan" | "inf" | "-inf"}} naming each (`read_jsonl` turns them back into floats).
    ValueError for a non-finite value in anything but a dict (there is no room for the note)."""
    notes = {}

    def encode(x, key):
        if isinstance(x, dict):
            return {k: encode(v, f"{key}.{k}" if key else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [encode(v, f"{key}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, (float, np.floating)) and not np.isfinite(x):
            notes[key] = str(float(x))  # 'nan', 'inf', '-inf'
            return None
        return x

    out = encode(obj, "")
    if notes:
        if not isinstance(out, dict):
            raise ValueError(f"non-finite values at {sorted(notes)} cannot be written as JSON")
        out = {**out, NONFINITE: notes}
    return json.dumps(out, allow_nan=False, **kwargs)


def save_json(path, obj):
    """Process 0 writes `obj` as indented JSON, atomically (an eval.json is never half-written); a NaN or an
    infinity is written as null with a note naming it (`json_text`), never as bare NaN."""
    if jax.process_index() == 0:
        caches.atomic_write_bytes(path, json_text(obj, indent=2, sort_keys=True).encode())


def save_eval_json(path, metrics: dict):
    """Write evaluation results, refusing NaN/inf as results: non-finite metrics go to `<name>.failed.json`
    (values as strings, so the file stays valid JSON) and NonFiniteError is raised, so the run is marked failed."""
    bad = sorted(k for k, v in metrics.items() if is_number(v) and not np.isfinite(v))
    if not bad:
        save_json(path, metrics)
        return
    p = epath.Path(path)
    failed = p.parent / f"{p.stem}.failed.json"
    save_json(failed, {"failed": f"non-finite metrics: {', '.join(bad)}",
                       **{k: str(v) if k in bad else v for k, v in metrics.items()}})
    from amd_jax.errors import NonFiniteError

    raise NonFiniteError(f"The evaluation gave non-finite metrics ({', '.join(f'{k}={metrics[k]}' for k in bad)}); "
                         f"they are not results: {p.name} was not written, {failed} holds them. The student diverged: "
                         "lower optim.student_lr / optim.critic_lr or evaluate an earlier checkpoint.")


def fmt(d: dict) -> str:
    """A log line of metrics: key=value sorted by key, floats to 4 significant digits."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(d.items()))


def is_number(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def read_jsonl(path) -> list[dict]:
    """The lines a JsonlWriter(path) wrote; a step written twice (a resumed run) keeps its last values."""
    p = epath.Path(path)
    if not p.exists():
        return []
    by_step: dict[int, dict] = {}
    for line in p.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            for key, value in row.pop(NONFINITE, {}).items():  # json_text wrote these as null
                row[key] = float(value)
            by_step.setdefault(row["step"], {}).update(row)
    return [by_step[s] for s in sorted(by_step)]


class Progress:
    """Steps/s and an ETA of a phase without a metric writer (the teacher's training, sample generation)."""

    def __init__(self, start_step: int, total_steps: int):
        self.t0, self.s0, self.total = time.time(), start_step, total_steps

    def line(self, step: int) -> str:
        dt = max(time.time() - self.t0, 1e-9)
        rate = (step - self.s0) / dt
        return rate_and_eta(rate, (self.total - step) / rate if rate > 0 else float("inf"))


def rate_and_eta(steps_per_sec: float, eta_s: float) -> str:
    """'2.31 steps/s, ETA 5m03s' (hours from 1 h on: 'ETA 1h02m')."""
    if not np.isfinite(eta_s):
        return f"{steps_per_sec:.2f} steps/s, ETA ?"
    m, s = divmod(int(round(eta_s)), 60)
    eta = f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"
    return f"{steps_per_sec:.2f} steps/s, ETA {eta}"


class TrainProgress(periodic_actions.ReportProgress):
    """clu's ReportProgress for the training loop: called after every step, it measures steps/s between reports
    (every `every` steps and at the last). Its scalars (clu's steps_per_sec and uptime, and eta_s) are kept, not
    written: `pop_scalars()` gives them as perf/<name> for the loop's one write of the step (one metrics.jsonl line
    per logged step); `line()` is the console's 'N steps/s, ETA ...'."""

    def __init__(self, total_steps: int, every: int):
        self._pending = _Pending("perf/")
        super().__init__(num_train_steps=total_steps, every_steps=every, every_secs=None, writer=self._pending)
        self.steps_per_sec, self.eta_s = float("nan"), float("nan")

    def _apply(self, step: int, t: float):
        self.steps_per_sec = (step - self._previous_step) / max(t - self._previous_time, 1e-9)
        self.eta_s = (self._num_train_steps - step) / self.steps_per_sec if self.steps_per_sec > 0 else float("inf")
        super()._apply(step, t)
        self._writer.write_scalars(step, {"eta_s": self.eta_s})

    def pop_scalars(self) -> dict[str, float]:
        out, self._pending.scalars = self._pending.scalars, {}
        return out

    def line(self) -> str:
        return rate_and_eta(self.steps_per_sec, self.eta_s)


class _Pending(ScalarsOnly):
    """Keeps the scalars written to it (TrainProgress's: clu's ReportProgress writes 'steps_per_sec' and 'uptime'),
    each name prefixed (here 'perf/steps_per_sec', ...), until they are taken; writes nothing."""

    def __init__(self, prefix: str):
        self.prefix, self.scalars = prefix, {}

    def write_scalars(self, step, scalars):
        self.scalars.update({self.prefix + k: v for k, v in scalars.items()})


# The step line's metrics, in this order, those the method logs (steps.py): the student's and the fake teacher's
# losses, then AMD's reward, Forbidden-Zone fraction, DSA weight (1 + alpha_d) and RLS weight, batch means.
CONSOLE_METRICS = ("loss_generator", "loss_critic", "reward_mean", "zone_fraction", "alpha_mean", "rls_weight_mean")


def step_line(step: int, total: int, progress: str, metrics: dict, skipped: int = 0) -> str:
    """The console line of a logged step: 'step 100/800 | 2.31 steps/s, ETA 5m03s | loss_generator=...', with
    CONSOLE_METRICS only (TensorBoard and metrics.jsonl have them all), and the skipped updates when there were any."""
    shown = " ".join(f"{k}={metrics[k]:.4g}" for k in CONSOLE_METRICS if k in metrics)
    return f"step {step}/{total} | {progress} | {shown}" + (f" | skipped updates {skipped}" if skipped else "")
