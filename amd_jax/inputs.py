"""What a run trains from, identified by content: the teacher, the reward and the data files.

Paths may move, and are spelled relative or absolute, so the resume check (amd_jax/config/resume.py) leaves the
path-valued keys out; what they point to must not change under a resumed run. When a training run first uses its
frozen parameters, `record` computes a content digest of each input below; the Checkpointer stores them in every
checkpoint's meta (`inputs`), and a resume compares the current ones with the checkpoint's, refusing a difference
in one line that names the key, both digests and the fix. The same teacher moved or copied elsewhere has the same
digest, and resumes.

- the teacher (named by teacher.dir where the config has one, else model.path): amd_jax.checkpoint.fingerprint of
  the frozen teacher's per-array checksums, the same whatever the mesh;
- the reward (reward.path, else reward.dir, else reward.name): the same of the frozen reward's parameters, when
  the task has some;
- the data files named by data.path, data.embeddings and data.real: sha256 of the file (of a folder: of its files'
  relative names and contents). URLs (gs://...) and dataset references (tfds:NAME) are not read, and not compared.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time

from amd_jax import checkpoint, paths
from amd_jax.config.checks import need

log = logging.getLogger(__name__)

DATA_KEYS = ("data.path", "data.embeddings", "data.real")


def digests(config, frozen: dict) -> dict[str, str]:
    """{key: content digest} of the run's inputs (module docstring); `frozen` is Session.frozen()'s dict."""
    out = {}
    if frozen.get("teacher") is not None:
        key = "teacher.dir" if "dir" in config.get("teacher", {}) else "model.path"
        out[key] = checkpoint.fingerprint(checkpoint.digest(frozen["teacher"])[0])
    if frozen.get("reward") is not None:
        reward = config.get("reward", {})
        key = next((f"reward.{k}" for k in ("path", "dir") if k in reward), "reward.name")
        out[key] = checkpoint.fingerprint(checkpoint.digest(frozen["reward"])[0])
    for key in DATA_KEYS:
        block, name = key.split(".")
        value = config.get(block, {}).get(name)
        if isinstance(value, str) and value and not paths.is_url(value) and os.path.exists(value):
            out[key] = file_digest(value)
    return out


def file_digest(path: str) -> str:
    """sha256 (16 hex digits) of a local file, or of a folder's files (relative names and contents, sorted)."""
    t0, h = time.time(), hashlib.sha256()
    if os.path.isdir(path):
        files = sorted(os.path.relpath(os.path.join(root, f), path) for root, _, names in os.walk(path)
                       for f in names)
    else:
        files = [""]
    for rel in files:
        h.update(f"{rel}\0".encode())
        with open(os.path.join(path, rel) if rel else path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    if time.time() - t0 > 1:
        log.info("content digest of %s in %.1f s", path, time.time() - t0)
    return h.hexdigest()[:16]


def record(config, frozen: dict, saved: dict | None, step: int | None) -> dict[str, str]:
    """The digests of the run's inputs, for the checkpoints' meta; on a resume (`step`, the checkpoint's `saved`
    digests) ConfigError, in one line, when one differs and resume.allow_changes does not list its key."""
    current = digests(config, frozen)
    if step is None:
        return current
    if saved is None:
        log.info("The checkpoint at step %d records no content digests of its teacher, reward and data (written "
                 "before amd_jax stored them): they are not compared; the next checkpoints record them.", step)
        return current
    allowed = tuple(config.get("resume", {}).get("allow_changes") or ())
    for key in sorted(saved.keys() & current.keys()):
        if saved[key] == current[key] or any(key == a or key.startswith(a + ".") for a in allowed):
            continue
        what = key.split(".")[0]
        block, name = key.split(".")
        need(False, f"The checkpoint at step {step} was trained with another {what}: {key}={config[block][name]!r} "
                    f"holds content digest {current[key]}, the checkpoint's {what} had {saved[key]}. Point {key} at "
                    f"the {what} it was trained with (moved or copied is fine), use a new --workdir, or add "
                    f"--config.resume.allow_changes=\"('{key}',)\" to continue with this one on purpose.")
    return current
