"""Metric output: TensorBoard event files (tensorboard's own writer, no TensorFlow), the console, PNG files.

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


class SummaryWriter:
    """write_scalars / write_images / write_hparams into WORKDIR/tensorboard, like clu's metric writers.

    `jsonl`: also append every write_scalars call as one JSON line {"step": ..., name: value, ...} to that file,
    the plain-text copy that sweep.py reads for its training curves (no TensorBoard reader needed).
    Every write is guarded (amd_jax/outputs.py): a folder that refuses it raises OutputError naming the folder and
    the cause (TensorBoard writes in a background thread: its failure surfaces at the next write, flush or close).
    """

    def __init__(self, logdir: str, enabled: bool | None = None, jsonl: str | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = epath.Path(jsonl) if jsonl else None
        self.logdir = str(logdir)
        if not self.enabled:
            return
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        with self._tensorboard():
            epath.Path(logdir).mkdir(parents=True, exist_ok=True)
            self._writer = EventFileWriter(str(logdir))

    def _tensorboard(self):
        return outputs.writing(self.logdir, "TensorBoard events")

    def _add(self, step: int, values):
        summary = self._summary_pb2.Summary(value=values)
        with self._tensorboard():
            self._writer.add_event(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def write_scalars(self, step: int, scalars: dict[str, float]):
        if self.enabled:
            S = self._summary_pb2.Summary
            self._add(step, [S.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()])
            if self._jsonl is not None:
                with outputs.writing(self._jsonl.parent, self._jsonl.name), self._jsonl.open("a") as f:
                    f.write(json_text({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")

    def write_images(self, step: int, images: dict[str, np.ndarray]):
        if self.enabled:
            S = self._summary_pb2.Summary
            vals = []
            for k, img in images.items():
                h, w = img.shape[:2]
                c = 1 if img.ndim == 2 else img.shape[2]
                vals.append(S.Value(tag=k, image=S.Image(height=h, width=w, colorspace=c, encoded_image_string=png_bytes(img))))
            self._add(step, vals)

    def write_hparams(self, hparams: dict):
        if self.enabled:
            S = self._summary_pb2.Summary
            text = "```\n" + json.dumps(hparams, indent=1, default=str) + "\n```"
            meta = self._summary_pb2.SummaryMetadata(plugin_data=self._summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
            from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

            tensor = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING, string_val=[text.encode()], tensor_shape=tensor_shape_pb2.TensorShapeProto()
            )
            self._add(0, [S.Value(tag="config", metadata=meta, tensor=tensor)])

    def flush(self):
        if self.enabled:
            with self._tensorboard():
                self._writer.flush()

    def close(self):
        if self.enabled:
            with self._tensorboard():
                self._writer.close()


def save_png(path, image: np.ndarray):
    """Process 0 writes `image` as a PNG, atomically (a reader never sees half a file)."""
    if jax.process_index() == 0:
        caches.atomic_write_bytes(path, png_bytes(image))


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
    """The lines a SummaryWriter(jsonl=path) wrote; a step written twice (a resumed run) keeps its last values."""
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
    """Steps/s and an ETA for the console line."""

    def __init__(self, start_step: int, total_steps: int):
        self.t0, self.s0, self.total = time.time(), start_step, total_steps

    def line(self, step: int) -> str:
        dt = max(time.time() - self.t0, 1e-9)
        rate = (step - self.s0) / dt
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        return f"{rate:.2f} steps/s, ETA {eta / 60:.1f} min"
