"""The run's metric output through clu (amd_jax/writers.py, amd_jax/clu_lib.py), the loop's progress, learning
rates and profile window (amd_jax/loop.py), and the phase announcements (amd_jax/phases.py).

What is read back is read with independent readers: TensorBoard's own EventAccumulator, json, closed forms."""

import importlib.util
import io
import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amd_jax import loop, phases, writers
from amd_jax.errors import OutputError
from amd_jax.steps import make_optimizer


def _events(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed here")
def test_clu_imports_without_tensorflow_and_its_tf_writer_says_why_it_is_absent():
    from amd_jax import clu_lib

    stand_in = sys.modules["clu.metric_writers.summary_writer"]
    assert isinstance(stand_in, types.ModuleType) and clu_lib.metric_writers.SummaryWriter is stand_in.SummaryWriter
    with pytest.raises(ImportError, match="needs TensorFlow"):
        clu_lib.metric_writers.SummaryWriter("/tmp/never")
    assert issubclass(writers.TensorBoardWriter, clu_lib.MetricWriter)
    assert issubclass(writers.TrainProgress, clu_lib.periodic_actions.ReportProgress)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_create_writer_writes_tensorboard_events_and_metrics_jsonl(tmp_path, asynchronous):
    w = writers.create_writer(tmp_path, asynchronous=asynchronous, enabled=True)
    w.write_hparams({"lr": 0.5, "model": {"width": 3}})
    w.write_scalars(1, {"train/loss": 2.5, "perf/step_time_s": 0.25})
    w.write_scalars(2, {"train/loss": float("nan")})
    image = np.zeros((6, 4, 3), np.uint8)
    image[2, 1] = (255, 10, 20)
    w.write_images(2, {"eval/samples/samples": image})
    w.write_texts(3, {"note": "hello"})
    w.flush()
    w.close()

    acc = _events(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")][0] == (1, 2.5)
    assert np.isnan(acc.Scalars("train/loss")[1].value) and acc.Scalars("perf/step_time_s")[0].value == 0.25
    (img,) = acc.Images("eval/samples/samples")
    from PIL import Image
    import io

    decoded = np.asarray(Image.open(io.BytesIO(img.encoded_image_string)))
    assert (img.step, img.width, img.height) == (2, 4, 6) and np.array_equal(decoded, image)
    texts = {tag: acc.Tensors(tag)[0] for tag in ("note", "config")}
    assert texts["note"].step == 3 and texts["note"].tensor_proto.string_val == [b"hello"]
    assert json.loads(texts["config"].tensor_proto.string_val[0].decode().strip("`\n")) == {
        "lr": 0.5, "model": {"width": 3}}

    rows = writers.read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[0] == {"step": 1, "train/loss": 2.5, "perf/step_time_s": 0.25}
    assert np.isnan(rows[1]["train/loss"])
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2  # one line per write_scalars


def test_other_processes_write_nothing(tmp_path):
    w = writers.create_writer(tmp_path, enabled=False)
    w.write_scalars(1, {"train/loss": 1.0})
    w.close()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_full_device_raises_output_error_naming_the_file(tmp_path, asynchronous):
    """metrics.jsonl on /dev/full: the synchronous writer raises at that write; clu's AsyncMultiWriter raises at
    the next write or at flush (clu's AsyncError), which create_writer turns back into the same OutputError."""
    os.symlink("/dev/full", tmp_path / "metrics.jsonl")
    w = writers.create_writer(tmp_path, asynchronous=asynchronous, enabled=True)
    want = rf"^Cannot write metrics.jsonl into {tmp_path}: No space left on device$"
    if not asynchronous:
        with pytest.raises(OutputError, match=want):
            w.write_scalars(1, {"train/loss": 1.0})
        return
    w.write_scalars(1, {"train/loss": 1.0})  # queued: fails in the background thread
    with pytest.raises(OutputError, match=want):
        w.flush()
    w.write_scalars(2, {"train/loss": 1.0})
    with pytest.raises(OutputError, match=want):
        for step in range(3, 100):  # the failure of step 2's write surfaces at one of the next writes
            w.write_scalars(step, {"train/loss": 1.0})
            if step % 10 == 0:
                w.flush()


def test_train_progress_reports_steps_per_second_and_eta_like_clu():
    """ReportProgress's steps/s between reports, and ETA = (total - step) / steps/s, at every `every` steps and at
    the last; scalars kept for the loop's one write per step."""
    p = writers.TrainProgress(total_steps=10, every=4)
    assert not p(0, t=100.0)  # the reference point
    for step, t in ((1, 100.5), (2, 101.0), (3, 101.5)):
        assert not p(step, t=t)
    assert p(4, t=102.0)
    got = p.pop_scalars()
    assert got["perf/steps_per_sec"] == pytest.approx(2.0) and got["perf/eta_s"] == pytest.approx(3.0)
    assert "perf/uptime" in got and p.pop_scalars() == {}
    assert p.line() == "2.00 steps/s, ETA 0m03s"
    for step, t in ((5, 103.0), (6, 104.0), (7, 105.0), (8, 106.0), (9, 107.0)):
        p(step, t=t)
    got = p.pop_scalars()
    assert got["perf/steps_per_sec"] == pytest.approx(1.0) and got["perf/eta_s"] == pytest.approx(2.0)  # 4 in 4 s
    assert p(10, t=108.0)  # the last step reports although 10 % 4 != 0
    assert p.pop_scalars()["perf/eta_s"] == 0.0


def test_rate_and_eta_text():
    assert writers.rate_and_eta(3.14159, 75.4) == "3.14 steps/s, ETA 1m15s"
    assert writers.rate_and_eta(0.01, 3 * 3600 + 125) == "0.01 steps/s, ETA 3h02m"
    assert writers.rate_and_eta(0.0, float("inf")) == "0.00 steps/s, ETA ?"


def test_step_line_leads_with_progress_and_shows_the_chosen_metrics_in_order():
    metrics = {f"m{i:02d}": float(i) for i in range(25)}
    metrics.update(zone_fraction=0.125, loss_critic=0.5, loss_generator=1.5, reward_mean=-0.01, rls_weight_mean=1.0,
                   alpha_mean=1.25)
    line = writers.step_line(100, 800, "2.00 steps/s, ETA 5m50s", metrics)
    assert line == ("step 100/800 | 2.00 steps/s, ETA 5m50s | loss_generator=1.5 loss_critic=0.5 reward_mean=-0.01 "
                    "zone_fraction=0.125 alpha_mean=1.25 rls_weight_mean=1")
    dmd2 = writers.step_line(5, 10, "x", {"loss_generator": 1.0, "loss_critic": 2.0, "dmd_norm": 3.0}, skipped=2)
    assert dmd2 == "step 5/10 | x | loss_generator=1 loss_critic=2 | skipped updates 2"


def _opt_after(tx, updates: int):
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for _ in range(updates):
        _, state = tx.update({"w": jnp.ones(3)}, state, params)
    return state


@pytest.mark.parametrize("warmup", [0, 10])
def test_learning_rates_are_those_of_the_latest_update(warmup):
    """optax's linear warm-up from 0: the k-th update (k = 1, 2, ...) uses peak * min(k - 1, W) / W."""
    optim = ml_collections.ConfigDict(dict(warmup_steps=warmup, grad_clip=1.0, b1=0.9, b2=0.99, eps=1e-8,
                                           weight_decay=0.0, student_lr=1e-3, critic_lr=4e-3))
    c = ml_collections.ConfigDict({"optim": optim})
    for k_student, k_critic in ((1, 2), (4, 13)):
        state = types.SimpleNamespace(student_opt=_opt_after(make_optimizer(optim, 1e-3), k_student),
                                      critic_opt=_opt_after(make_optimizer(optim, 4e-3), k_critic))
        got = loop.learning_rates(c, state)
        want = {name: peak * (min(k - 1, warmup) / warmup if warmup else 1.0)
                for name, peak, k in (("lr_student", 1e-3, k_student), ("lr_critic", 4e-3, k_critic))}
        assert got == pytest.approx(want, rel=1e-6), (k_student, k_critic)


def test_profile_window_traces_the_configured_iterations(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(jax.profiler, "start_trace", lambda logdir: calls.append(("start", logdir)))
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: calls.append(("stop",)))
    prof = loop.ProfileSteps((2, 4), tmp_path)
    for step in range(7):  # called with the step about to run, as the loop does
        prof(step)
        calls.append(step)
    prof.close()
    assert calls == [0, 1, ("start", str(tmp_path)), 2, 3, ("stop",), 4, 5, 6]

    calls.clear()
    prof = loop.ProfileSteps((1, 50), tmp_path)  # the run ends inside the window: close stops the trace
    for step in range(3):
        prof(step)
    prof.close()
    prof.close()
    assert calls == [("start", str(tmp_path)), ("stop",)]


def test_compile_cache_hits_tell_a_cached_compilation():
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # store even this small program
    try:
        if not jax.config.jax_compilation_cache_dir:
            pytest.skip("no persistent compilation cache configured")
        salt = float(np.random.default_rng().integers(1, 2**31))  # a program no earlier run compiled

        def compile_once():
            lowered = jax.jit(lambda x: jnp.sin(x) * salt + x @ x.T).lower(np.ones((8, 8), np.float32))
            cache = phases.CompileCacheHits()  # counts this compilation's events only
            lowered.compile()
            return cache.source()

        assert compile_once() == "compiled (not in the persistent compilation cache)"
        jax.clear_caches()
        assert compile_once() == "loaded from the persistent compilation cache"
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before)


def test_announced_phase_says_start_and_result(caplog):
    caplog.set_level("INFO", logger="amd_jax")
    with phases.announced("Doing a thing") as note:
        note["result"] = "fid=1.5"
    start, end = [r.getMessage() for r in caplog.records]
    assert start == "Doing a thing ..." and end.startswith("Doing a thing: done in ") and end.endswith(" s; fid=1.5")


def test_animation_holds_every_frame_exactly_and_loops(tmp_path):
    """A grey video written as an animated GIF reads back (Pillow) frame for frame, pixel for pixel, at the
    requested frame duration, looping; a colour video keeps its size and frame count; bad frames are refused."""
    from PIL import Image, ImageSequence

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, size=(5, 12, 16), dtype=np.uint8)
    video[1] = video[0]  # a frozen stretch: Pillow merges it into one frame shown twice as long
    path = tmp_path / "v.gif"
    writers.save_animation(path, video[..., None], fps=4)
    with Image.open(path) as im:
        assert im.info["loop"] == 0
        shown = []  # what a viewer shows in each 250 ms slot
        for f in ImageSequence.Iterator(im):
            assert f.info["duration"] % 250 == 0
            shown += [np.asarray(f.convert("L"))] * (f.info["duration"] // 250)
    assert len(shown) == 5 and all(np.array_equal(a, b) for a, b in zip(shown, video))
    colour = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(writers.animation_bytes(colour))) as im:
        assert im.n_frames == 3 and im.size == (8, 8)
    with pytest.raises(ValueError, match="uint8"):
        writers.animation_bytes(video.astype(np.float32))


def test_frame_strip_puts_a_videos_frames_side_by_side_and_keeps_images():
    video = np.arange(3 * 2 * 4 * 1, dtype=np.uint8).reshape(3, 2, 4, 1)
    strip = writers.frame_strip(video)
    assert strip.shape == (2, 12, 1)
    for t in range(3):
        np.testing.assert_array_equal(strip[:, 4 * t:4 * (t + 1)], video[t])
    image = np.zeros((5, 6, 3), np.uint8)
    assert writers.frame_strip(image) is not None and writers.frame_strip(image).shape == (5, 6, 3)
