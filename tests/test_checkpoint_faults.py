"""Checkpoints that cannot lose work: damaged ones are detected and skipped, bad ones are never written.

- A damaged newest checkpoint (truncated or missing data file, bits flipped inside a data file at the same size,
  damaged meta JSON) -> a warning naming the step and the reason, the step moved to <step>.damaged with its files
  untouched, resume from the previous step, and the final state and eval equal those of an uninterrupted run.
- The checksum does not depend on the sharding and changes with any single bit (checked against NumPy).
- Orbax's max_to_keep rotation never deletes a damaged step, nor an older one before a new save exists.
- A state holding a NaN is refused: nothing written, older checkpoints intact.
- A read-only or full checkpoints folder ends the run within seconds with a message naming the folder and the cause.
- kill -9 at seeded moments (one during an async save) then resume: the final state is bit-identical.
"""

import glob
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from amd_jax.checkpoint import Checkpointer, digest
from amd_jax.errors import CheckpointError
import procs
from procs import Train

# one device, 12 steps, checkpoints at 4, 8, 12 (keep 3), no samples; eval at the end
ARGS = {"mesh.shape": "(1,1)", "total_steps": 12, "checkpoint.every": 4, "log.sample_every": 0}


def _flags(**extra):
    return [f"--config.{k}={v}" for k, v in {**ARGS, **extra}.items()]


def _listing(workdir):
    return sorted(os.listdir(workdir / "checkpoints"))


def _raw_state(workdir, step):
    """The saved arrays as Orbax itself reads them (no amd_jax code): {path: numpy array}."""
    tree = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k  # bit-identical


def _snapshot(folder):
    return {os.path.relpath(f, folder): Path(f).read_bytes()
            for f in glob.glob(f"{folder}/**", recursive=True) if os.path.isfile(f)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run (teacher included): every test copies it, and compares with its state and eval."""
    wd = tmp_path_factory.mktemp("finished") / "run"
    with Train(wd, _flags(), tag="finished") as run:
        assert run.wait(timeout=240) == [0], run.out()[-3000:]
    assert _listing(wd) == ["12", "4", "8"]
    return wd


def _copy(finished, tmp_path):
    wd = tmp_path / "run"
    shutil.copytree(finished, wd)
    (wd / "eval.json").unlink()  # rewritten by the resumed run: compared below
    return wd


# ------------------------------------------------------------------------------------------- damage kinds
def _data_files(step_dir):
    return sorted(glob.glob(f"{step_dir}/state/ocdbt.process_0/d/*"), key=os.path.getsize)


def _truncate(step_dir):
    big = _data_files(step_dir)[-1]
    os.truncate(big, os.path.getsize(big) // 2)


def _remove(step_dir):
    os.remove(_data_files(step_dir)[-1])


def _damage_meta(step_dir):
    meta = step_dir / "meta" / "metadata"
    meta.write_bytes(meta.read_bytes()[: meta.stat().st_size // 2])


def _damage_array_metadatas(step_dir):
    """Orbax's per-array metadata file cut short (before: one warning, then ~20-47 'Exception ignored in:
    <coroutine ...>' or 'Event loop is closed' traceback blocks)."""
    for meta in (step_dir / "state" / "array_metadatas").iterdir():
        meta.write_bytes(meta.read_bytes()[:20])


def _flip_bit(step_dir):
    """Flip one bit of the largest data file (same size) where Orbax still reads the step but returns other values:
    silent corruption. Seeded positions; the change is checked with Orbax alone."""
    big = Path(_data_files(step_dir)[-1])
    data = big.read_bytes()
    before = _raw_state(step_dir.parent.parent, step_dir.name)
    rng = random.Random(0)
    for _ in range(40):
        pos, bit = rng.randrange(len(data)), rng.randrange(8)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << bit
        big.write_bytes(flipped)
        try:
            after = _raw_state(step_dir.parent.parent, step_dir.name)
        except Exception:  # this flip breaks the compressed stream: Orbax notices by itself
            continue
        if any(not np.array_equal(before[k], after[k], equal_nan=True) for k in before):
            return
    pytest.fail("no silent single-bit corruption found in 40 seeded tries")


DAMAGE = {
    "truncated_data": (_truncate, "cannot read the data"),
    "missing_data": (_remove, "cannot read the data"),
    "bit_flip": (_flip_bit, "checksum mismatch"),
    "damaged_meta_json": (_damage_meta, "cannot read the meta JSON"),
    "damaged_array_metadatas": (_damage_array_metadatas, "cannot read the data"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_and_keeps_it(finished, tmp_path, kind):
    wd = _copy(finished, tmp_path)
    damage, reason = DAMAGE[kind]
    damage(wd / "checkpoints" / "12")
    damaged_files = _snapshot(wd / "checkpoints" / "12")

    # saves every 2 steps from here (10, 12): Orbax's keep=3 rotation runs while the damaged step is around
    with Train(wd, _flags(**{"checkpoint.every": 2}), tag="resume") as run:
        assert run.wait(timeout=240) == [0], run.out()[-3000:]
    out = run.out()
    assert re.search(rf"Checkpoint 12 is damaged, trying the previous one: .*{reason}", out), out[-3000:]
    assert "Traceback" not in out and "Exception ignored" not in out, out[-3000:]  # one line per damaged step
    assert re.search(r"Checkpoint 12 moved aside to \S+/checkpoints/12\.damaged \(kept, not deleted\)", out)
    assert "Resumed from step 8 " in out
    assert _listing(wd) == ["10", "12", "12.damaged", "8"]  # keep=3 counted 8, 10, 12 (not 12.damaged): 4 went
    assert _snapshot(wd / "checkpoints" / "12.damaged") == damaged_files  # the damaged step, byte for byte

    _assert_same_state(_raw_state(wd, 12), _raw_state(finished, 12))
    assert json.loads((wd / "eval.json").read_text()) == json.loads((finished / "eval.json").read_text())


@pytest.mark.parametrize("kind", ["symlink loop", "dangling symlink", "file"])
def test_step_entry_that_is_no_folder_is_set_aside(finished, tmp_path, kind):
    """checkpoints/12 replaced by something Orbax does not list: before, a symlink loop made every rerun retrain
    steps 9-12 and fail the save of 12; a file was silently overwritten. Now it is moved to 12.damaged (kept)."""
    wd = _copy(finished, tmp_path)
    step = wd / "checkpoints" / "12"
    shutil.rmtree(step)
    if kind == "file":
        step.write_text("precious\n")
    else:
        os.symlink("12" if kind == "symlink loop" else "/nonexistent/12", step)
    with Train(wd, _flags(), tag="stray") as run:
        assert run.wait(timeout=240) == [0], run.out()[-3000:]
    out = run.out()
    what = "a file" if kind == "file" else "a symlink to .* that leads to no folder"
    assert re.search(rf"checkpoints/12 is not a checkpoint folder \({what}\): moved it aside to "
                     rf"{wd}/checkpoints/12\.damaged \(kept\)", out), out[-3000:]
    assert "Resumed from step 8 " in out and "Traceback" not in out
    assert _listing(wd) == ["12", "12.damaged", "4", "8"]
    aside = wd / "checkpoints" / "12.damaged"
    assert aside.read_text() == "precious\n" if kind == "file" else os.path.islink(aside)
    _assert_same_state(_raw_state(wd, 12), _raw_state(finished, 12))


def test_evaluating_a_damaged_step_is_a_clear_error(finished, tmp_path):
    wd = _copy(finished, tmp_path)
    for data in _data_files(wd / "checkpoints" / "12"):  # all of them: the evaluator reads only the student's bytes
        os.remove(data)
    cmd = [sys.executable, "-m", "amd_jax.evaluate", "--config=configs/toy2d_tiny.py", f"--workdir={wd}", "--step=12",
           *_flags()]
    done = subprocess.run(cmd, cwd=procs.REPO, env=procs._env(1), capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr[-3000:]
    assert re.search(r"Checkpoint error: .*cannot read the data of \S+/checkpoints/12: ", done.stderr), done.stderr[-3000:]
    assert _listing(wd) == ["12", "4", "8"]  # the evaluator moves nothing


# ------------------------------------------------------------------------------------------- in-process units
def _small_state(value: float):
    return {"w": jnp.full((4, 8), value, jnp.float32), "count": jnp.int32(3), "rng": jnp.arange(2, dtype=jnp.uint32)}


def _restore_target(state):
    dev0 = SingleDeviceSharding(jax.devices()[0])
    abstract = jax.eval_shape(lambda: state)
    return abstract, jax.tree_util.tree_map(lambda _: dev0, abstract)


def test_rotation_never_deletes_damaged_or_older_before_a_new_save(tmp_path):
    ck = Checkpointer(str(tmp_path), keep=2)
    for step in (1, 2, 3):
        ck.save(step, _small_state(step), {})
        ck.wait()
    assert _listing(tmp_path) == ["2", "3"]
    _damage_meta(tmp_path / "checkpoints" / "3")

    ck = Checkpointer(str(tmp_path), keep=2)  # a restart
    step, state, _ = ck.restore_latest(*_restore_target(_small_state(0)))
    assert step == 2 and float(state["w"][0, 0]) == 2.0
    assert _listing(tmp_path) == ["2", "3.damaged"]
    ck.save(3, _small_state(30), {})  # would collide with the damaged step 3 had it stayed in place
    ck.wait()
    assert _listing(tmp_path) == ["2", "3", "3.damaged"]  # keep=2: nothing deleted yet
    ck.save(4, _small_state(40), {})
    ck.close()
    assert _listing(tmp_path) == ["3", "3.damaged", "4"]  # 2 goes once two new intact steps exist; 3.damaged stays

    for _ in range(2):  # step 4 damaged twice: the second one set aside next to the first
        _damage_meta(tmp_path / "checkpoints" / "4")
        ck = Checkpointer(str(tmp_path), keep=2)
        assert ck.restore_latest(*_restore_target(_small_state(0)))[0] == 3
        ck.save(4, _small_state(41), {})
        ck.close()
    assert _listing(tmp_path) == ["3", "3.damaged", "4", "4.damaged", "4.damaged.2"]


def test_no_intact_checkpoint_refuses_and_moves_nothing(tmp_path):
    ck = Checkpointer(str(tmp_path))
    for step in (1, 2):
        ck.save(step, _small_state(step), {})
    ck.close()
    for step in ("1", "2"):
        _damage_meta(tmp_path / "checkpoints" / step)
    with pytest.raises(CheckpointError, match=r"(?s)No checkpoint in .* can be restored:.*step 2: .*step 1: .*"
                                              r"Nothing was moved or deleted"):
        Checkpointer(str(tmp_path)).restore_latest(*_restore_target(_small_state(0)))
    assert _listing(tmp_path) == ["1", "2"]


def test_non_finite_state_is_refused_and_nothing_written(tmp_path):
    ck = Checkpointer(str(tmp_path))
    ck.save(1, _small_state(1.0), {})
    bad = _small_state(2.0)
    bad["w"] = bad["w"].at[1, 2].set(jnp.inf)
    with pytest.raises(CheckpointError, match=r"Refusing to save step 2: .*non-finite values \(first: w;.*"
                                              r"newest finite checkpoint, step 1, is kept"):
        ck.save(2, bad, {})
    ck.close()
    assert _listing(tmp_path) == ["1"]  # no folder, no temporary folder for step 2
    _, state, _ = Checkpointer(str(tmp_path)).restore_latest(*_restore_target(bad))
    assert np.array_equal(np.asarray(state["w"]), np.ones((4, 8), np.float32))


def test_checkpoints_without_checksums_restore_unverified(tmp_path, caplog):
    ck = Checkpointer(str(tmp_path))
    ck.save(1, _small_state(1.0), {"data_position": 1})
    ck.close()
    meta_file = tmp_path / "checkpoints" / "1" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    del meta["checksum"]  # as written before checksums existed
    meta_file.write_text(json.dumps(meta))
    state, meta = Checkpointer(str(tmp_path)).restore(1, *_restore_target(_small_state(0)))
    assert meta["data_position"] == 1 and float(state["w"][0, 0]) == 1.0
    assert "no checksums" in caplog.text


def test_relative_workdir_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ck = Checkpointer("rel/run")
    assert str(ck.dir) == str(tmp_path / "rel" / "run" / "checkpoints")
    ck.save(1, _small_state(1.0), {})
    ck.close()
    monkeypatch.chdir("/")
    state, _ = Checkpointer(str(tmp_path / "rel" / "run")).restore(1, *_restore_target(_small_state(0)))
    assert float(state["w"][0, 0]) == 1.0


# ------------------------------------------------------------------------------------------- checksum
def _np_words(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.uint64).ravel()
    return a.view({4: np.uint32, 2: np.uint16, 1: np.uint8}[a.dtype.itemsize]).astype(np.uint64).ravel()


def _np_digest(a: np.ndarray) -> str:
    """Reference of amd_jax.checkpoint.digest for one array, in plain NumPy (uint64 arithmetic, reduced mod 2**32)."""
    m = np.uint64(2**32 - 1)
    w = _np_words(a)
    i = np.arange(w.size, dtype=np.uint64)
    weighted = int(np.sum((w * (2 * i + 1)) & m, dtype=np.uint64) & m)
    h = (w + i * np.uint64(0x9E3779B9)) & m
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & m
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & m
    h ^= h >> np.uint64(16)
    mixed = int(np.sum(h, dtype=np.uint64) & m)
    return f"{weighted:08x}{mixed:08x}"


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((16, 6)).astype(np.float32),
        "bf16": rng.standard_normal((8, 4)).astype(ml_dtypes.bfloat16),
        "i32": rng.integers(-1000, 1000, (24,)).astype(np.int32),
        "u8": rng.integers(0, 256, (8, 3)).astype(np.uint8),
        "bool": rng.random((8, 2)) > 0.5,
        "scalar": np.float32(1.5),
    }


def _shardings():
    devices = np.array(jax.devices())
    assert devices.size == 8, "tests/conftest.py simulates 8 devices"
    flat, grid = Mesh(devices, ("x",)), Mesh(devices.reshape(4, 2), ("a", "b"))
    return {
        "one device": lambda a: SingleDeviceSharding(devices[0]),
        "8-way first axis": lambda a: NamedSharding(flat, P("x") if a.ndim else P()),
        "4x2 grid": lambda a: NamedSharding(grid, P("a", "b") if a.ndim == 2 and a.shape[1] % 2 == 0 else
                                            P("a") if a.ndim else P()),
        "replicated on 8": lambda a: NamedSharding(flat, P()),
    }


def test_checksum_matches_numpy_whatever_the_sharding():
    arrays = _arrays()
    want = {k: _np_digest(np.asarray(v)) for k, v in arrays.items()}
    for name, sharding in _shardings().items():
        placed = {k: jax.device_put(v, sharding(np.asarray(v))) for k, v in arrays.items()}
        if name != "one device":
            assert any(len(a.sharding.device_set) == 8 for a in placed.values())
        sums, nonfinite = digest(placed)
        assert sums == want, name
        assert nonfinite == []


def test_checksum_changes_with_any_single_bit_and_flags_non_finite():
    rng = random.Random(1)
    sharded = _shardings()["4x2 grid"]
    for name, a in _arrays().items():
        a = np.array(a)
        base = digest({name: jax.device_put(a, sharded(a))})[0][name]
        raw = bytearray(a.tobytes())
        bits = 1 if a.dtype == np.bool_ else 8 * a.dtype.itemsize
        for _ in range(12):  # a sample of (element, bit) positions per array
            element, bit = rng.randrange(max(a.size, 1)), rng.randrange(bits)
            flipped = bytearray(raw)
            flipped[element * a.dtype.itemsize + bit // 8] ^= 1 << (bit % 8)
            b = np.frombuffer(bytes(flipped), a.dtype).reshape(a.shape)
            got = digest({name: jax.device_put(b, sharded(b))})[0][name]
            assert got == _np_digest(b) and got != base, (name, element, bit)
    x = np.zeros((8, 4), np.float32)
    x[3, 1] = np.nan
    _, nonfinite = digest({"a": {"nan": x, "inf": np.full(2, -np.inf, np.float32), "ok": x[:2] * 0 + 1,
                                 "int": np.zeros(3, np.int32)}})
    assert nonfinite == ["a/inf", "a/nan"]


# ------------------------------------------------------------------------------------------- folders that refuse
def test_read_only_checkpoints_folder_fails_at_once(finished, tmp_path):
    wd = tmp_path / "run"
    (wd / "checkpoints").mkdir(parents=True)
    shutil.copytree(finished / "teacher", wd / "teacher")
    if subprocess.run(["chattr", "+i", str(wd / "checkpoints")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (root ignores permission bits, so no read-only folder)")
    try:
        t0 = time.time()
        with Train(wd, _flags(), tag="ro") as run:
            rc = run.wait(timeout=60)
        assert rc == [1] and time.time() - t0 < 60, run.out()[-3000:]
        assert (f"Checkpoint error: Cannot write checkpoints into {wd / 'checkpoints'}: Operation not permitted"
                in run.out()), run.out()[-3000:]
        assert "Compiled in" not in run.out()  # refused at start-up
    finally:
        subprocess.run(["chattr", "-i", str(wd / "checkpoints")], check=True)


def test_full_checkpoints_folder_stops_the_run_with_the_cause(finished, tmp_path):
    """A tmpfs holding about one and a half checkpoints: the write probe and the save of step 4 pass, the save of 8
    runs out of space; the run stops within seconds naming the folder and the cause, step 4 is intact."""
    one = sum(-(-len(data) // 4096) * 4096 for data in _snapshot(finished / "checkpoints" / "4").values())
    wd = tmp_path / "run"
    (wd / "checkpoints").mkdir(parents=True)
    shutil.copytree(finished / "teacher", wd / "teacher")
    mount = ["mount", "-t", "tmpfs", "-o", f"size={one * 3 // 2 // 1024}k", "tmpfs", str(wd / "checkpoints")]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN) to fill a folder")
    try:
        t0 = time.time()
        with Train(wd, _flags(), tag="full") as run:
            rc = run.wait(timeout=120)
        out = run.out()
        assert rc == [1], out[-3000:]
        failed = re.search(r"Checkpoint error: Saving a checkpoint into (\S+) failed: No space left on device.*"
                           r"Steps complete on disk: \[4\]", out)
        assert failed and failed.group(1) == str(wd / "checkpoints"), out[-3000:]
        assert time.time() - t0 < 60
        _assert_same_state(_raw_state(wd, 4), _raw_state(finished, 4))
    finally:
        subprocess.run(["umount", str(wd / "checkpoints")], check=True)


# ------------------------------------------------------------------------------------------- kill -9
def _kill_when(wd, tag, ready, delay):
    """Start the run, wait until ready(run) holds (polled every 5 ms), sleep `delay`, SIGKILL it."""
    with Train(wd, _flags(**{"checkpoint.every": 2, "log.every": 1}), tag=tag) as run:
        deadline = time.time() + 180
        while not ready(run):
            assert run.procs[0].poll() is None and time.time() < deadline, run.out()[-3000:]
            time.sleep(0.005)
        time.sleep(delay)
        run.procs[0].kill()
        assert run.procs[0].wait() == -9, "the run ended before it could be killed"
    return run.out()


def _ctime(path) -> float:
    try:
        return path.stat().st_ctime
    except FileNotFoundError:  # renamed (save finished) or removed meanwhile
        return 0.0


def test_kill_9_at_random_moments_then_resume_is_bit_identical(finished, tmp_path):
    """Killed mid-run (seeded step and delay), then while its resumed run writes a checkpoint, then at a later seeded
    step of the next resumed run; the last run finishes with the uninterrupted run's state and eval, bit for bit."""
    wd = tmp_path / "run"
    wd.mkdir()
    shutil.copytree(finished / "teacher", wd / "teacher")
    rng = random.Random(2024)
    ckpts = wd / "checkpoints"
    k = rng.randint(3, 7)
    _kill_when(wd, "kill1", lambda run: f"step {k}/12 " in run.out(), rng.uniform(0, 0.1))
    saving, started = [], time.time()  # during an async save: a temporary folder created by this run exists

    def in_save(run):
        if "Resumed from step" in run.out():
            saving.extend(p for p in ckpts.glob("*.orbax-checkpoint-tmp") if _ctime(p) > started)
        return bool(saving)

    outs = [_kill_when(wd, "kill2", in_save, 0.0)]
    k = rng.randint(7, 9)
    outs.append(_kill_when(wd, "kill3", lambda run: f"step {k}/12 " in run.out(), rng.uniform(0, 0.1)))
    with Train(wd, _flags(**{"checkpoint.every": 2}), tag="final") as run:
        assert run.wait(timeout=240) == [0], run.out()[-3000:]
    for out in outs + [run.out()]:
        assert re.search(r"Resumed from step \d+ ", out), out[-3000:]  # each restart did resume from a checkpoint
    _assert_same_state(_raw_state(wd, 12), _raw_state(finished, 12))
    assert json.loads((wd / "eval.json").read_text()) == json.loads((finished / "eval.json").read_text())
