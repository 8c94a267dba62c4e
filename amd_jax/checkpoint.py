"""Orbax checkpoints of the sharded train state (the frozen teacher is never saved), verified when read back.

Layout: WORKDIR/checkpoints/<step>/{state, meta}. `state` is the TrainState as a plain nested dict (flax state
dict), restored straight into the target shardings, which may come from a different mesh. `meta` is JSON: the
resolved config, the data position, the mesh it was written with and a content checksum of every saved array
(`digest`). `check_compatible` compares the saved tree's paths, shapes and dtypes with the abstract state of the
current config BEFORE anything is compiled or written, and names the fix when they differ.

What goes wrong, and what happens:
- A step that cannot be read back (truncated or missing files, damaged metadata, data that no longer matches its
  checksums, a non-finite value): `restore` raises CheckpointError. `restore_latest` warns, falls back to the newest
  step that restores, and only then moves the damaged newer ones to `<step>.damaged` inside checkpoints/: kept on
  disk, no longer listed (so Orbax's max_to_keep rotation neither counts nor deletes them, and a later save of that
  step does not collide with them). If steps exist and none restores, it refuses and moves nothing: every
  checkpoint failing at once points to a common cause (storage outage, wrong code) rather than to damage, and
  starting afresh would quietly spend the run's compute again.
- A state holding a NaN or an infinity: `save` refuses it and writes nothing.
- A folder that cannot be written: the constructor's write probe fails at once; a save that fails surfaces at the
  next `save` or `wait` as CheckpointError naming the folder and the OS cause. Orbax creates the step folders in the
  calling thread: created in its background thread (its default), a failed mkdir left the commit threads waiting
  300 s for a signal that never came, and the process could not exit meanwhile.
- A step's name in checkpoints/ that is not a folder (a file, a symlink loop, a dangling link): moved to
  `<step>.damaged` at start-up, with a warning (Orbax does not list it, and would fail to save that step, or replace
  the file silently). A step that fails to read part-way is reported in one line, without Orbax's echoes of its
  abandoned reads (amd_jax/outputs.py `quiet_storage_noise`).
- The offline evaluation opens the folder read-only (`read_only=True`): no probe, nothing created or moved (and
  without Orbax's "Given directory is read only" warning, which it logs for any folder opened so).
Orbax deletes old steps (max_to_keep) only after a new save has finished writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import serialization
from jax.experimental import multihost_utils

from amd_jax import outputs, paths
from amd_jax.errors import CheckpointError, ConfigError
from amd_jax.parallel.sharding import path_str

log = logging.getLogger("amd_jax")

CHECKSUM = "u32-odd-weighted-sum+fmix32-sum"  # stored with the sums: names the algorithm of `digest`


class Checkpointer:
    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True, read_only: bool = False):
        """`read_only` (the offline evaluation): nothing is probed, created or moved; only reading works."""
        self.dir = epath.Path(paths.absolute(str(workdir))) / "checkpoints"
        self.read_only = read_only
        if not read_only:
            self.check_writable()
            self._set_aside_strays()
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=not read_only, read_only=read_only,
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
        )
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        with _quiet_read_only():
            self.manager = ocp.CheckpointManager(self.dir, options=opts, item_handlers=handlers)
        # the content digests of what the run trains from (amd_jax/inputs.py), stored in every checkpoint's meta
        self.inputs: dict[str, str] | None = None

    def check_writable(self):
        """Write and delete a small file in checkpoints/ (each process its own): a read-only, full or inaccessible
        folder fails here, at start-up, rather than at the first save after compiling and training."""
        try:
            outputs.try_write(self.dir, f".write_probe.process_{jax.process_index()}")
        except OSError as e:
            raise CheckpointError(
                f"Cannot write checkpoints into {self.dir}: {_reason(e)}. Make the folder writable (or free space "
                f"there), or give another --workdir."
            ) from e

    def _set_aside_strays(self):
        """A step's name (digits) in checkpoints/ that is not a folder (a file, a symlink loop, a dangling link) is
        no checkpoint: Orbax does not list it, and its save of that step would fail on it at every run (a link) or
        replace it silently (a file). Process 0 moves each to `<name>.damaged` (kept) with a warning."""
        error = None
        if jax.process_index() == 0:
            try:
                for entry in self.dir.iterdir():
                    if entry.name.isdigit() and not entry.is_dir():
                        dest, kind = _free_name(self.dir, f"{entry.name}.damaged"), _stray_kind(entry)
                        entry.rename(dest)  # a link is renamed itself, never followed
                        log.warning("checkpoints/%s is not a checkpoint folder (%s): moved it aside to %s (kept).",
                                    entry.name, kind, dest)
            except OSError as e:
                error = e
        if not _on_all_processes(error is None):
            why = _reason(error) if error is not None else "failed on process 0"
            raise CheckpointError(f"Could not move a non-folder step entry out of the way in {self.dir}: {why}. Move "
                                  f"it out of {self.dir} by hand and run again.") from error

    def steps(self) -> list[int]:
        """Every step in checkpoints/, re-listed from storage (a training job may have added some)."""
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def latest_compatible(self, abstract_state, config: dict | None = None) -> int | None:
        """The newest step whose metadata reads, after `check_compatible` on it (ConfigError if this config cannot
        restore it): the check before anything is compiled. Steps whose metadata does not read are skipped silently
        here; `restore_latest` reports them and falls back past them."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                self.check_compatible(step, abstract_state, config)
                return step
            except CheckpointError:
                continue
        return None

    # ------------------------------------------------------------------------------------------- reading
    def check_compatible(self, step: int, abstract_state, config: dict | None = None) -> dict:
        """Raise ConfigError if the checkpoint at `step` cannot be restored into `abstract_state`; return its meta.

        CheckpointError if its metadata cannot be read. With `config` (the current config as a dict) the error also
        lists the config keys that differ."""
        saved = self._read(step, "state metadata", lambda: self.manager.item_metadata(step)["state"])
        saved = getattr(saved, "tree", saved)
        if saved is None:
            raise CheckpointError(f"{self.dir / str(step)} has no state metadata: is it an amd_jax checkpoint?")
        meta = self.restore_meta(step)
        want = _leaf_table(serialization.to_state_dict(abstract_state))
        have = _leaf_table(saved)
        problems = [f"missing in checkpoint: {p}" for p in sorted(set(want) - set(have))]
        problems += [f"not in this config's state: {p}" for p in sorted(set(have) - set(want))]
        problems += [
            f"{p}: checkpoint {have[p]} vs config {want[p]}" for p in sorted(set(want) & set(have)) if have[p] != want[p]
        ]
        if problems:
            shown = "\n  ".join(problems[:12]) + ("\n  ..." if len(problems) > 12 else "")
            keys = ""
            if config is not None:
                old, new = _flat(meta.get("config", {})), _flat(config)
                diff = [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k)]
                keys = "\nConfig keys that differ from the checkpoint's:\n  " + "\n  ".join(diff[:20])
            raise ConfigError(
                f"The checkpoint at {self.dir / str(step)} was written by an incompatible config "
                f"({len(problems)} differences):\n  {shown}{keys}\nUse a new --workdir for this config, or restore the "
                f"config the checkpoint was made with (its meta JSON holds it). Nothing was changed in {self.dir}."
            )
        return meta

    def restore_meta(self, step: int) -> dict:
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        return self._read(step, "meta JSON", lambda: self.manager.restore(step, args=args)["meta"])

    def restore(self, step: int, abstract_state, shardings):
        """Restore into `shardings` (any mesh) and verify: returns (state, meta).

        CheckpointError if the step cannot be read, its arrays do not match the checksums stored with them, or it
        holds a non-finite value."""
        target = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
        )
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(serialization.to_state_dict(target)), meta=ocp.args.JsonRestore()
        )
        out = self._read(step, "data", lambda: self.manager.restore(step, args=args))
        self._verify(step, out["state"], out["meta"])
        return serialization.from_state_dict(abstract_state, out["state"]), out["meta"]

    def restore_part(self, step: int, name: str, abstract_part, shardings):
        """Only the state's top-level field `name` (e.g. 'student') of checkpoint `step`, verified: the offline
        evaluation reads the student's bytes alone, not the critic's nor the two optimizer states."""
        target = {name: serialization.to_state_dict(jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_part, shardings))}
        restore_args = jax.tree_util.tree_map(
            lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype), target)
        with _quiet_read_only():
            reader = ocp.CheckpointManager(self.dir, options=ocp.CheckpointManagerOptions(read_only=True),
                                           item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                                                          "meta": ocp.JsonCheckpointHandler()})
        args = ocp.args.Composite(state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                               partial_restore=True),
                                  meta=ocp.args.JsonRestore())
        out = self._read(step, "data", lambda: reader.restore(step, args=args))
        self._verify(step, out["state"], out["meta"], partial=True)
        return serialization.from_state_dict(abstract_part, out["state"][name])

    def restore_latest(self, abstract_state, shardings, config: dict | None = None):
        """The newest checkpoint that restores and verifies: (step, state, meta), or None if there is none.

        Walks the steps newest first. For each: `check_compatible` (its ConfigError propagates: an incompatible config
        is not damage), then `restore`; a CheckpointError is logged as a warning naming the step and the reason, and
        the next older step is tried. Once one restores, the damaged newer steps are moved aside (see the module
        docstring). If steps exist and none restores: CheckpointError listing each, and nothing is moved."""
        self.manager.reload()
        damaged = {}
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                self.check_compatible(step, abstract_state, config)
                state, meta = self.restore(step, abstract_state, shardings)
            except CheckpointError as e:
                log.warning("Checkpoint %d is damaged, trying the previous one: %s", step, e)
                damaged[step] = str(e)
                continue
            self._set_aside(damaged, step)
            return step, state, meta
        if damaged:
            listed = "\n  ".join(f"step {s}: {why}" for s, why in damaged.items())
            raise CheckpointError(
                f"No checkpoint in {self.dir} can be restored:\n  {listed}\nNothing was moved or deleted. If the cause "
                f"is passing (storage outage), run again; to start this run afresh, move {self.dir} away (its files "
                f"are kept) or use a new --workdir."
            )
        return None

    def _read(self, step: int, what: str, fn):
        """fn() (a read of step `step`); any failure on any process becomes CheckpointError on every process, so that
        all processes fall back together."""
        outputs.quiet_storage_noise()  # a step that fails part-way: one CheckpointError, not dozens of echoes
        try:
            out, error = fn(), None
        except Exception as e:  # whatever the storage or the file format raises: the step is unreadable
            out, error = None, e
        if not _on_all_processes(error is None):
            why = _reason(error) if error is not None else "failed on another process"
            raise CheckpointError(f"cannot read the {what} of {self.dir / str(step)}: {why}") from error
        return out

    def _verify(self, step: int, state_dict, meta: dict, partial: bool = False):
        stored = meta.get("checksum")
        if stored is None:
            log.warning("Checkpoint %d has no checksums (written before amd_jax stored them): restored unverified.",
                        step)
            return
        sums, nonfinite = digest(state_dict)
        problem = compare(stored, sums, partial)
        if problem:
            raise CheckpointError(f"{self.dir / str(step)}: {problem}")
        if nonfinite:
            raise CheckpointError(f"{self.dir / str(step)} holds non-finite values (first: {nonfinite[0]})")

    def _set_aside(self, damaged: dict[int, str], restored: int):
        """Move the damaged steps to checkpoints/<step>.damaged (process 0; the others wait), and re-list."""
        if not damaged:
            return
        error = None
        if jax.process_index() == 0:
            try:
                for step in damaged:
                    dest = _free_name(self.dir, f"{step}.damaged")
                    (self.dir / str(step)).rename(dest)
                    log.warning("Checkpoint %d moved aside to %s (kept, not deleted); resuming from step %d.", step,
                                dest, restored)
            except OSError as e:
                error = e
        if not _on_all_processes(error is None):
            why = _reason(error) if error is not None else "failed on process 0"
            raise CheckpointError(
                f"Could not move a damaged checkpoint ({sorted(damaged)}) out of the way in {self.dir}: {why}. Move "
                f"it out of {self.dir} by hand (a resume would otherwise collide with it) and run again."
            ) from error
        self.manager.reload()

    # ------------------------------------------------------------------------------------------- writing
    def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
        """Start saving `state` at `step` with `meta` and the checksums of its arrays (async if so configured).

        CheckpointError, and nothing written, if the state holds a NaN or an infinity; CheckpointError naming the
        folder and the cause if this save or the previous (async) one fails."""
        state_dict = jax.block_until_ready(serialization.to_state_dict(state))  # the time below: the checksums' own
        t0 = time.time()
        sums, nonfinite = digest(state_dict)
        log.info("checkpoint %d: checksums of %d arrays in %.1f ms", step, len(sums), 1e3 * (time.time() - t0))
        if nonfinite:
            self.wait()
            raise CheckpointError(
                f"Refusing to save step {step}: the state holds non-finite values (first: {nonfinite[0]}; "
                f"{len(nonfinite)} arrays in all). Nothing was written; the newest finite checkpoint, step "
                f"{self.latest_step()}, is kept in {self.dir}."
            )
        meta = {**meta, "checksum": {"algorithm": CHECKSUM, "arrays": sums}}
        if self.inputs:
            meta["inputs"] = self.inputs
        args = ocp.args.Composite(state=ocp.args.StandardSave(state_dict), meta=ocp.args.JsonSave(meta))
        try:
            return self.manager.save(step, args=args, force=force)
        except Exception as e:  # this save's or the previous async one's failure, whatever raised it
            raise CheckpointError(self._failed(e)) from e

    def wait(self):
        """Block until the pending async save has finished; CheckpointError if it failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise CheckpointError(self._failed(e)) from e

    def close(self):
        self.wait()
        self.manager.close()

    def _failed(self, e: Exception) -> str:
        self.manager.reload()
        return (
            f"Saving a checkpoint into {self.dir} failed: {_reason(e)}. Steps complete on disk: "
            f"{sorted(self.manager.all_steps()) or 'none'}. Free space in (or make writable) {self.dir} and run again: "
            f"training resumes from the newest complete step."
        )


class _ReadOnlyNotice(logging.Filter):
    """Drops Orbax's 'Given directory is read only=DIR' warning: a reader opened read-only on purpose (so that it
    creates, cleans up and deletes nothing) says so at WARNING on every open, whether DIR is writable or not."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


@contextlib.contextmanager
def _quiet_read_only():
    """Around the construction of a read-only Orbax CheckpointManager: its read-only notice is not logged."""
    notice, absl_logger = _ReadOnlyNotice(), logging.getLogger("absl")
    absl_logger.addFilter(notice)
    try:
        yield
    finally:
        absl_logger.removeFilter(notice)


def newest_config(workdir: str) -> tuple[int, dict] | None:
    """(step, saved config) of the newest checkpoint in WORKDIR/checkpoints whose meta JSON reads, or None; reads
    the meta file alone (no Orbax manager, nothing written): the check of `experiment` before a task is built."""
    folder = epath.Path(paths.absolute(str(workdir))) / "checkpoints"
    try:
        steps = sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit()), reverse=True)
    except OSError:  # no checkpoints/ yet (or unreadable: the Checkpointer reports that)
        return None
    for step in steps:
        try:
            return step, json.loads((folder / str(step) / "meta" / "metadata").read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):  # damaged: restore_latest reports it and falls back
            continue
    return None


def compare(stored: dict, sums: dict[str, str], partial: bool = False) -> str:
    """'' when the checksums `sums` (of `digest`) match the record `stored` ({"algorithm", "arrays"}, as `save`
    writes it into a checkpoint's meta and the first-use caches store it), else the reason in a few words.
    `partial`: `sums` covers some of the stored arrays (the others are not compared)."""
    if stored.get("algorithm") != CHECKSUM:
        return f"unknown checksum algorithm {stored.get('algorithm')!r}"
    saved = stored.get("arrays", {})
    bad = sorted(p for p in set(sums) | (set() if partial else set(saved)) if sums.get(p) != saved.get(p))
    if bad:
        return (f"checksum mismatch in {len(bad)} of {len(sums)} arrays (first: {', '.join(bad[:3])}): its data "
                f"files changed after they were written")
    return ""


def fingerprint(sums: dict[str, str]) -> str:
    """One content digest (16 hex digits) of a whole tree from its per-array checksums (`digest`): the same for the
    same arrays under the same names, wherever they are stored and however they are sharded."""
    text = "\n".join(f"{name}={value}" for name, value in sorted(sums.items()))
    return hashlib.sha256(f"{CHECKSUM}\n{text}".encode()).hexdigest()[:16]


def digest(tree, local: bool = False) -> tuple[dict[str, str], list[str]]:
    """Content checksums of the arrays of `tree` ({path: 16 hex digits}) and the paths of its floating arrays that
    hold a NaN or an infinity. Each shard is summed on its own device (nothing is gathered to a host but 3 numbers a
    shard); each block of an array counts once (its replica 0), and the processes add up their partial sums.

    An array is read as 32-bit words w_i (i = position in the flattened global array; 16-, 8-bit and bool elements
    widened to one word, 64-bit elements as two) and summed twice modulo 2**32: sum w_i * (2i + 1) and
    sum fmix32(w_i + i * 0x9E3779B9) (MurmurHash3's finalizer). uint32 addition is associative and commutative, so the
    sums do not depend on the sharding, the mesh or the order of the reduction. A change of any single element changes
    both sums (an odd factor and fmix32 are bijections modulo 2**32); changes of several elements cancel in both only
    by chance, the second sum being nonlinear.
    Why per shard and not one jitted call over the whole state: on sdxl_tiny (1758 arrays) that one program took 41 s
    to compile on CPU; per shard, a few dozen small programs (one per local shape and dtype) take about 5 s.
    `local`: the leaves are this process's own complete copies (host numpy, the same on every process, e.g. a
    first-use teacher or cache being saved or loaded): the processes' sums are not added up (no collective)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    names = [path_str(p) for p, _ in leaves]
    parts = jax.device_get([_partial_sums(jnp.asarray(v)) for _, v in leaves])  # dispatched first, fetched at once
    sums = np.stack([np.sum(p, axis=0, dtype=np.uint64) % 2**32 if p else np.zeros(3, np.uint64) for p in parts])
    if jax.process_count() > 1 and not local:
        sums = np.sum(multihost_utils.process_allgather(sums.astype(np.uint32)), axis=0, dtype=np.uint64) % 2**32
    return ({n: f"{int(a):08x}{int(b):08x}" for n, (a, b, _) in zip(names, sums)},
            [n for n, (_, _, bad) in zip(names, sums) if bad])


def _partial_sums(a: jax.Array) -> list:
    """[weighted sum, mixed sum, has non-finite] of each shard of `a` on this process that is replica 0 of its block."""
    word_shape = a.shape + ((2,) if jnp.dtype(a.dtype).itemsize == 8 else ())
    strides = [math.prod(word_shape[d + 1:]) % 2**32 for d in range(len(word_shape))]
    out = []
    for shard in a.addressable_shards:
        if shard.replica_id == 0:
            base = sum((s.start or 0) * st for s, st in zip(shard.index, strides)) % 2**32
            out.append(_shard_sums(shard.data, np.uint32(base), np.asarray(strides, np.uint32)))
    return out


@jax.jit
def _shard_sums(x, base, strides):
    """The sums of one shard: `base` is the global word position of its first word, `strides` the global ones."""
    w = _words(x)
    index = base + sum(jax.lax.broadcasted_iota(jnp.uint32, w.shape, d) * strides[d] for d in range(w.ndim))
    weighted = jnp.sum(w * (2 * index + 1), dtype=jnp.uint32)
    mixed = jnp.sum(_fmix32(w + index * jnp.uint32(0x9E3779B9)), dtype=jnp.uint32)
    finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
    return jnp.stack([weighted, mixed, (~finite).astype(jnp.uint32)])


def _words(x):
    """The bits of x as uint32: one word per element, a trailing axis of two for 64-bit dtypes."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = jnp.dtype(x.dtype).itemsize
    if size in (4, 8):
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type(x, {2: jnp.uint16, 1: jnp.uint8}[size]).astype(jnp.uint32)


def _fmix32(h):
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _on_all_processes(ok: bool) -> bool:
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _stray_kind(entry: epath.Path) -> str:
    path = str(entry)
    if os.path.islink(path):
        return f"a symlink to {os.readlink(path)!r} that leads to no folder"
    return "a file"


def _free_name(folder: epath.Path, name: str) -> epath.Path:
    """folder/name, or folder/name.2, name.3, ... if taken (no '_': Orbax would read 'x_12' as step 12)."""
    dest, n = folder / name, 1
    while dest.exists():
        n += 1
        dest = folder / f"{name}.{n}"
    return dest


def _reason(e: BaseException) -> str:
    """An I/O failure in one line, led by its OS cause (permission denied, no space left on device) when it has one;
    from the innermost exception of the chain (Orbax wraps TensorStore's precise message in a vaguer one)."""
    while e.__cause__ or e.__context__:
        e = e.__cause__ or e.__context__
    if isinstance(e, OSError) and e.errno:
        return f"{os.strerror(e.errno)}: {e.filename}" if e.filename else os.strerror(e.errno)
    text = " ".join(str(e).split())
    code = re.search(r"os_error_code='?(\d+)", text)
    cause = os.strerror(int(code.group(1))) if code else type(e).__name__
    return f"{cause}: {text[:400]}" + ("..." if len(text) > 400 else "")


def _leaf_table(tree) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_str(p): (tuple(getattr(v, "shape", ())), str(getattr(v, "dtype", ""))) for p, v in leaves}


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out
