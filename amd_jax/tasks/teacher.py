"""Stage 1 for small experiments: train the class-conditional teacher with the same denoising loss the critic uses.

The teacher is trained on real data with label dropout (the null label gives the unconditional branch of CFG)
and saved with Orbax under `config.teacher.dir`/params, with the per-array checksums of the run's checkpoints
(amd_jax.checkpoint.digest) in the checkpoint's custom metadata. `load_or_train` is what a task calls: it loads the
teacher when its checkpoint exists and verifies it (checksums, finiteness), and trains it otherwise (toy2d: ~1 min
on a CPU), also when the checkpoint is damaged. A teacher whose training ends non-finite is never saved, and a
SIGTERM during its training stops the job with one line, saving nothing (the next run trains it again).
"""

from __future__ import annotations

import json
import logging
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath

from amd_jax import caches, paths, writers
from amd_jax import method as M
from amd_jax.errors import ConfigError, DamagedFileError
from amd_jax.models.common.bundle import Models

log = logging.getLogger(__name__)


# per_step: steps dispatched ahead of the device. JAX's async dispatch would otherwise queue up to a whole chunk
# (100 steps) before the chunk's loss is read, and the job stopped by a SIGTERM still ran every queued step before
# exiting (measured: ~60 s from the one-line message to the exit, a 3.9 M-parameter teacher at 0.48 steps/s).
# configs/moving_mnist.py, SIGTERM 5 s after its first 100 steps: 5.2 s to the exit with 2 queued, 7.7 s unbounded.
# 8 keeps the small digits UNet's fast steps pipelined (600 steps of configs/digits.py's teacher beside a test run:
# 24.0 / 25.9 s with 8, 26.5 / 33.0 s with 2, 28.1 s unbounded) and bounds the wait to 8 steps.
QUEUED_STEPS = 8


def teacher_loss(models: Models, params, batch, rng, label_dropout: float):
    d = models.teacher
    x0 = batch["real"]
    k_t, k_eps, k_drop = jax.random.split(rng, 3)
    t = d.schedule.sample_t(k_t, (x0.shape[0],), 0.0, 1.0)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
    cond = batch["cond"]
    drop = jax.random.bernoulli(k_drop, label_dropout, (x0.shape[0],))
    null = d.null_cond(cond)
    cond = jax.tree_util.tree_map(lambda n, c: jnp.where(drop.reshape((-1,) + (1,) * (c.ndim - 1)), n, c), null, cond)
    pred = d.native(params, M.add_noise(d.schedule, x0, eps, t), t, cond)
    return M.denoising_loss(pred, M.target(d.schedule, d.prediction_type, x0, eps, t))


def train_teacher(config, models: Models, data, per_step: bool = False, stop: "_StopOnSigterm | None" = None):
    """Adam on the denoising loss for `config.teacher.steps` steps (cosine decay), in chunks of 100 steps.

    Chunk c uses PRNGKey(seed + c + 1), its step i fold_in(., i), and the data's batches 10_000_000 + step.
    Default: each chunk is one `lax.scan` (fast for the toy MLPs). `per_step`: the same steps, keys and batches,
    one jitted step at a time: XLA:CPU runs a conv UNet's backward pass about 16x slower inside a scan (measured
    2.77 s vs 0.17 s per step), so the digit UNets use it.
    """
    tc, chunk = config.teacher, 100
    params = models.init_denoiser(jax.random.PRNGKey(tc.seed))
    tx = optax.adam(optax.cosine_decay_schedule(tc.lr, tc.steps))
    opt = tx.init(params)

    def step(params, opt, batch, rng):
        loss, g = jax.value_and_grad(teacher_loss, argnums=1)(models, params, batch, rng, tc.label_dropout)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    @jax.jit
    def run_chunk(params, opt, batches, rng):
        def body(carry, xs):
            batch, i = xs
            params, opt, loss = step(*carry, batch, jax.random.fold_in(rng, i))
            return (params, opt), loss

        (params, opt), losses = jax.lax.scan(body, (params, opt), (batches, jnp.arange(chunk)))
        return params, opt, losses.mean()

    one_step = jax.jit(step)
    t0 = t_logged = time.time()
    progress, chunks = None, tc.steps // chunk
    stop = stop or _StopOnSigterm(install=False)
    if chunks:
        log.info("Compiling the teacher's training step and running its first %d steps ...", chunk)
    for c in range(chunks):
        stop.check(c * chunk, tc.steps, config.teacher.dir)
        steps, rng = range(c * chunk, (c + 1) * chunk), jax.random.PRNGKey(tc.seed + c + 1)
        if per_step:
            losses = []
            for i, s in enumerate(steps):
                stop.check(s, tc.steps, config.teacher.dir)
                params, opt, loss = one_step(params, opt, data.global_batch(10_000_000 + s, tc.batch_size),
                                             jax.random.fold_in(rng, i))
                losses.append(loss)
                if i >= QUEUED_STEPS:  # at most QUEUED_STEPS dispatched ahead: a SIGTERM stops within them
                    losses[i - QUEUED_STEPS].block_until_ready()
            loss = np.mean(jax.device_get(losses))
        else:
            bs = [data.global_batch(10_000_000 + s, tc.batch_size) for s in steps]
            batches = jax.tree_util.tree_map(lambda *a: np.stack(a), *bs)
            params, opt, loss = run_chunk(params, opt, batches, rng)
        done = (c + 1) * chunk
        if c == 0 or c == chunks - 1 or time.time() - t_logged >= 10:  # the first chunk, then every >= 10 s
            loss = float(loss)  # waits for the chunk
            # steps/s after the first chunk, which includes the compilation
            rate = f" (compiled and ran in {time.time() - t0:.0f} s)" if progress is None else f", {progress.line(done)}"
            log.info("teacher step %d/%d loss %.4f%s", done, tc.steps, loss, rate)
            t_logged = time.time()
        if progress is None:
            progress = writers.Progress(done, tc.steps)
    log.info("The teacher trained in %.0f s", time.time() - t0)
    return params


class _StopOnSigterm:
    """SIGTERM while the teacher trains and is saved (a context manager): `check`, called between steps or chunks,
    ends the job with one line and nothing saved, instead of the signal's default death without a word; a SIGTERM
    during the save lets the save finish, then ends the job (`after_save`). Not installed in multi-process jobs
    (JAX's preemption sync manager owns SIGTERM there; the loop stops at its first step) nor off the main thread."""

    def __init__(self, install: bool = True):
        self.flag, self.previous, self.install = False, None, install and jax.process_count() == 1

    def __enter__(self):
        if self.install:
            try:
                self.previous = signal.signal(signal.SIGTERM, self._set)
            except ValueError:  # not in the main thread
                pass
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None

    def _set(self, *_):
        self.flag = True

    def check(self, step: int, total: int, folder: str):
        if self.flag:
            raise SystemExit(f"SIGTERM during the teacher's training (step {step}/{total}): stopped; no teacher was "
                             f"saved in {folder}. Run the same command again to train it from the start.")

    def after_save(self, path):
        if self.flag:
            raise SystemExit(f"SIGTERM during the teacher's training: the teacher was finished and saved in {path}; "
                             f"stopped before the distillation. Run the same command again to continue.")


def load_or_train(config, models: Models, data, per_step: bool = False):
    """The frozen teacher's parameters: restored from `config.teacher.dir`/params, or trained and saved there.

    `train_teacher(config, models, data, per_step)` runs when the checkpoint is missing, or when it is damaged
    (cannot be restored, does not match its checksums, holds a NaN): the damaged folder is then moved aside to
    params.damaged with a one-line warning naming it and the reason. A readable checkpoint of another model is
    refused with a ConfigError, and with teacher.train_if_missing=False (a teacher the user provides) a damaged one
    with a DamagedFileError naming it; both stay where they are. A teacher whose training ends non-finite is not
    saved: NonFiniteError naming teacher.lr and the folder.
    Every process restores, trains and saves (Orbax writes once and synchronises the processes); only process 0
    moves a damaged folder aside, before Orbax's save-start barrier, so no process sees it afterwards.
    """
    path = epath.Path(paths.absolute(config.teacher.dir)) / "params"
    abstract = jax.eval_shape(models.init_denoiser, jax.random.PRNGKey(0))
    ckpt = ocp.StandardCheckpointer()
    if path.exists():
        try:
            return _restore(ckpt, path, abstract)
        except DamagedFileError as e:
            if not config.teacher.train_if_missing:
                raise DamagedFileError(
                    f"The teacher checkpoint {path} cannot be restored ({e}). Point --config.teacher.dir at an "
                    f"intact teacher, or set --config.teacher.train_if_missing=True to move it aside and retrain."
                ) from e
            if jax.process_index() == 0:
                caches.move_aside(path, str(e))
    elif not config.teacher.train_if_missing:
        raise FileNotFoundError(
            f"No teacher checkpoint at {path}. Point --config.teacher.dir at one, or set "
            f"--config.teacher.train_if_missing=True to train it first."
        )
    log.info("No usable teacher at %s: training it (%d steps)", path, config.teacher.steps)
    # each process trains the same teacher on its own device; host numpy is written once by the primary process
    with _StopOnSigterm() as stop:
        params = jax.device_get(train_teacher(config, models, data, per_step, stop))
        record = caches.checksums(
            params, f"The teacher's training ({config.teacher.steps} steps, teacher.lr={config.teacher.lr})",
            path.parent, "Most likely teacher.lr is too high: lower --config.teacher.lr (or check "
            "teacher.batch_size and the data knobs) and run again.")
        if jax.process_index() == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        ckpt.save(path, params, custom_metadata={"checksum": record})
        ckpt.wait_until_finished()
        log.info("The teacher is saved in %s (%.1f s)", path, time.time() - t0)
    stop.after_save(path)
    return params


def _restore(ckpt, path, abstract):
    """The teacher at `path` as host numpy (usable by every process of a multi-host job), verified.

    Raises ConfigError when the checkpoint holds another model's parameters (its metadata says so; Orbax would
    restore the stored shapes without complaint) and DamagedFileError when it cannot be read, its arrays do not
    match the checksums stored with them, or it holds a NaN or an infinity. A teacher saved before amd_jax stored
    checksums loads with a warning (checked for finiteness only).
    """
    try:
        meta = ckpt.metadata(path).item_metadata
        # read here, not through Orbax: Orbax logs and swallows a damaged file, which would read as "no checksums"
        step_meta = path / "_CHECKPOINT_METADATA"  # absent: written by an Orbax that had none (no checksums)
        record = (json.loads(step_meta.read_text()).get("custom_metadata") or {}).get("checksum") \
            if step_meta.exists() else None
    except (*caches.UNREADABLE, AttributeError) as e:  # AttributeError: valid JSON that is not an object
        raise DamagedFileError(caches.describe(e)) from e
    if meta is None:  # Orbax logs and swallows the error of an unreadable _METADATA
        raise DamagedFileError("its _METADATA file cannot be read")
    mismatch = caches.tree_mismatch(meta.tree, abstract)
    if mismatch:
        raise ConfigError(
            f"The teacher checkpoint {path} holds another model's parameters ({mismatch}). Point "
            f"--config.teacher.dir at a teacher trained with this config's model settings, or at a new folder."
        )
    log.info("Loading the teacher from %s", path)
    try:
        params = ckpt.restore(path, jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), abstract))
    except caches.UNREADABLE as e:
        raise DamagedFileError(caches.describe(e)) from e
    if record is None:
        log.warning("The teacher at %s has no checksums (saved before amd_jax stored them): loaded unverified.", path)
    caches.verify(params, record, required=False)
    return params


def sample_teacher(models: Models, params, cond, omega: float, steps: int = 50, seed: int = 0):
    """Many-step DDIM samples of the teacher with CFG (DMD2 convention), for reporting the teacher's quality."""
    d = models.teacher
    cond = jax.tree_util.tree_map(jnp.asarray, cond)
    n = jax.tree_util.tree_leaves(cond)[0].shape[0]
    grid = np.linspace(1.0, 0.0, steps + 1)[:-1]
    ts = jnp.stack([d.schedule.timestep(float(f)) for f in grid])

    @jax.jit
    def run(params, cond, z):
        def x0_fn(x, t):
            return M.cfg(*d.x0_cond_uncond(params, x, t, cond), omega)

        return M.ddim_sample(x0_fn, d.schedule, ts, z)

    z = jax.random.normal(jax.random.PRNGKey(seed), (n,) + tuple(models.sample_shape), jnp.float32)
    return np.asarray(run(params, cond, z))
