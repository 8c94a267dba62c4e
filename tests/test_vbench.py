"""VBench's dimensions (amd_jax/metrics/vbench.py) against plain NumPy references written from VBench 0.1.5's code,
closed forms, and PyTorch outputs committed by tests/fixtures/make_vbench_fixtures.py (torch's resize, VBench's
DINO / CLIP transforms, transformers' ViTModel with transformers' and DINO's position-embedding interpolation);
then the command line's work (amd_jax/tools/vbench.py `run_or_exit`, what its main calls; the module defines its
absl flags only when it runs as a script) end to end on tiny models, and its one-line refusals."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from amd_jax import batching, writers
from amd_jax.errors import ConfigError
from amd_jax.metrics import vbench as V
from amd_jax.tools import vbench as tool

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
TINY = os.path.join(FIX, "vbench_tiny")
CLIP = os.path.join(FIX, "clip", "hf_tiny")  # a tiny transformers CLIPModel (tests/fixtures/make_clip_fixtures.py)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(TINY, "reference.npz")))


@pytest.fixture(scope="module")
def dino():
    return V.load_dino(TINY)


# ----------------------------------------------------------------- references written from VBench's code
def ref_consistency(features):
    """vbench/subject_consistency.py (and background_consistency.py) for one video: (video_sim / (T - 1), video_sim,
    cnt), torch's F.normalize and F.cosine_similarity written out."""
    def cos(a, b):
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8))

    video_sim, cnt, first, former = 0.0, 0, None, None
    for i, f in enumerate(np.asarray(features, np.float64)):
        f = f / max(np.linalg.norm(f), 1e-12)
        if i == 0:
            first = f
        else:
            video_sim += (max(0.0, cos(former, f)) + max(0.0, cos(first, f))) / 2
            cnt += 1
        former = f
    return video_sim / (len(features) - 1), video_sim, cnt


def ref_flicker(frames):
    """vbench/temporal_flickering.py cal_score: cv2.absdiff of float32 frames, np.mean, (255 - mean) / 255."""
    maes = [np.mean(np.abs(np.array(frames[i], np.float32) - np.array(frames[i + 1], np.float32)))
            for i in range(len(frames) - 1)]
    return (255.0 - np.mean(np.array(maes)).item()) / 255.0


def ref_dynamic(flows, frame_hw):
    """vbench/dynamic_degree.py set_params, get_score and check_move on given flows [P, H, W, 2]."""
    scale = min(frame_hw)
    thres, count_num = 6.0 * (scale / 256.0), round(4 * ((len(flows) + 1) / 16.0))
    scores = []
    for flo in flows:
        u, v = flo[:, :, 0], flo[:, :, 1]
        rad = np.sqrt(np.square(u) + np.square(v))
        h, w = rad.shape
        cut_index = int(h * w * 0.05)
        scores.append(np.mean(abs(np.sort(-rad.flatten()))[:cut_index]).item())
    count = 0
    for score in scores:
        if score > thres:
            count += 1
        if count >= count_num:
            return True
    return False


# ------------------------------------------------------------------------------------------- formulas
def test_consistency_matches_vbench_loop():
    rng = np.random.default_rng(0)
    videos = [rng.normal(size=(t, 12)) + rng.normal(size=12) * s for t, s in ((2, 0.0), (5, 0.5), (9, 2.0))]
    videos[0][1] = -videos[0][0]  # cos -1: clamped to 0 by max(0, .)
    sim = cnt = 0
    for f in videos:
        per_video, video_sim, n = ref_consistency(f)
        np.testing.assert_allclose(V.consistency(f), per_video, rtol=1e-12)
        sim, cnt = sim + video_sim, cnt + n
    assert V.consistency(videos[0]) == 0.0
    np.testing.assert_allclose(V.consistency_aggregate([V.consistency_terms(f) for f in videos]), sim / cnt, rtol=1e-12)
    assert V.subject_consistency(np.ones((4, 3))) == pytest.approx(1.0, abs=1e-12)  # identical frames
    with pytest.raises(ValueError, match="T >= 2"):
        V.consistency(np.ones((1, 3)))


def test_temporal_flickering_closed_forms_and_reference():
    rng = np.random.default_rng(1)
    still = np.repeat(rng.integers(0, 256, (1, 8, 10, 3), dtype=np.uint8), 4, axis=0)
    assert V.temporal_flickering(still) == 1.0
    blink = np.zeros((5, 4, 4, 3), np.uint8)
    blink[1::2] = 255
    assert V.temporal_flickering(blink) == 0.0
    shift = np.stack([np.full((4, 4, 3), 10 + 7 * i, np.uint8) for i in range(3)])
    assert V.temporal_flickering(shift) == pytest.approx((255 - 7) / 255, abs=1e-12)
    video = rng.integers(0, 256, (6, 9, 11, 3), dtype=np.uint8)
    assert V.temporal_flickering(video) == pytest.approx(ref_flicker(video), abs=1e-9)


def test_aesthetic_quality_matches_vbench():
    rng = np.random.default_rng(2)
    feats, w, b = rng.normal(size=(7, 768)) * 3, rng.normal(size=(1, 768)), rng.normal(size=(1,))
    # aesthetic_quality.py: F.normalize, nn.Linear(768, 1), / 10, mean over frames
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    expected = np.mean((unit @ w.T + b)[:, 0] / 10)
    assert V.aesthetic_quality(feats, w, b) == pytest.approx(expected, rel=1e-12)


def test_dynamic_degree_matches_vbench_on_given_flows():
    rng = np.random.default_rng(3)
    hw = (64, 96)  # threshold 6 * 64 / 256 = 1.5
    assert not V.dynamic_degree(np.zeros((7, 16, 24, 2)), hw)
    moving = np.zeros((5, 16, 24, 2))
    moving[:, :, :, 0] = 2.0  # every pair scores 2 > 1.5; count_num = round(4 * 6 / 16) = round(1.5) = 2
    assert V.dynamic_degree(moving, hw) and ref_dynamic(moving, hw)
    one = np.zeros_like(moving)
    one[2] = moving[2]  # one moving pair of the 2 needed
    assert not V.dynamic_degree(one, hw) and not ref_dynamic(one, hw)
    for _ in range(20):
        flows = rng.gamma(1.0, 0.6, size=(int(rng.integers(1, 12)), 10, 14, 2)) * rng.choice([-1, 1], (1, 1, 1, 2))
        assert V.dynamic_degree(flows, hw) == ref_dynamic(flows, hw)
        assert V.flow_score(flows[0]) == pytest.approx(
            np.mean(abs(np.sort(-np.hypot(flows[0, ..., 0], flows[0, ..., 1]).flatten()))[:7]), rel=1e-12)
    np.testing.assert_array_equal(V.dynamic_frames(9, 16), [0, 2, 4, 6, 8])  # Wan's 16 fps: every 2nd frame
    np.testing.assert_array_equal(V.dynamic_frames(4, 8), [0, 1, 2, 3])


# ------------------------------------------------------------------------------- preprocessing and DINO
def test_resize_matrices_match_torch_interpolate(ref):
    for key in (k for k in ref if k.startswith("resize_")):
        mode, n_in, n_out = key.split("_")[1:]
        n_in, n_out = int(n_in), int(n_out)
        m = (V.resize_matrix(n_in, n_out, "bicubic", (n_out + 0.1) / n_in) if mode == "scale"
             else V.resize_matrix(n_in, n_out, mode))
        np.testing.assert_allclose(ref[f"x_{n_in}_{n_out}"] @ m.T, ref[key], atol=1e-5, err_msg=key)


def test_vbench_transforms_match_torch(ref):
    np.testing.assert_allclose(np.asarray(V.vbench_transform(ref["video"], 24, "dino")), ref["dino_pixels"],
                               atol=2e-5)
    np.testing.assert_allclose(np.asarray(V.vbench_transform(ref["video"], 16, "clip")), ref["clip_pixels"],
                               atol=2e-5)


def test_dino_vit_matches_transformers_pytorch(ref, dino):
    np.testing.assert_allclose(np.asarray(dino.features(dino.params, ref["square_pixels"])), ref["square_cls"],
                               atol=1e-5)
    # 24 x 43 pixels: a 3 x 5 patch grid from 4 x 4 position embeddings
    ours = np.asarray(dino.features(dino.params, ref["dino_pixels"]))
    np.testing.assert_allclose(ours, ref["dino_cls"], atol=1e-5)
    hf = V.DinoViT(dino.config, dino.params, "hf")
    np.testing.assert_allclose(np.asarray(hf.features(hf.params, ref["dino_pixels"])), ref["hf_cls"], atol=1e-5)
    assert np.abs(ref["dino_cls"] - ref["hf_cls"]).max() > 1e-3  # the two interpolations are told apart


def test_load_dino_reads_flax_msgpack(tmp_path, ref, dino):
    """transformers' Flax layout (flax_model.msgpack, with a pooler the loader drops) gives the same model."""
    from flax import serialization

    shutil.copy(os.path.join(TINY, "config.json"), tmp_path / "config.json")
    tree = {**jax_to_numpy(dino.params), "pooler": {"dense": {"kernel": np.zeros((32, 32), np.float32),
                                                              "bias": np.zeros(32, np.float32)}}}
    (tmp_path / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    m = V.load_dino(tmp_path)
    np.testing.assert_array_equal(np.asarray(m.features(m.params, ref["square_pixels"])),
                                  np.asarray(dino.features(dino.params, ref["square_pixels"])))


def jax_to_numpy(tree):
    return {k: jax_to_numpy(v) if isinstance(v, dict) else np.asarray(v) for k, v in tree.items()}


def test_load_dino_refuses_bad_folders(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        V.dino_config(tmp_path / "missing")
    with pytest.raises(ConfigError, match="'clip' model"):
        V.dino_config(CLIP)
    bad = tmp_path / "wide"
    shutil.copytree(TINY, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64}))
    with pytest.raises(ValueError, match="DINO ViT checkpoint does not match"):
        V.load_dino(bad)


# --------------------------------------------------------------------------------------- command line
def _grey_video(rng, t=5):
    """uint8 [t, 20, 36, 3] with R = G = B (a GIF holds it exactly) and frames 1 and 2 equal (Pillow merges them)."""
    v = np.repeat(rng.integers(0, 256, (t, 20, 36, 1), dtype=np.uint8), 3, axis=-1)
    v[2] = v[1]
    return v


def test_command_line_end_to_end(tmp_path):
    rng = np.random.default_rng(4)
    videos = [_grey_video(rng) for _ in range(2)]
    for i, v in enumerate(videos):
        writers.save_animation(str(tmp_path / f"{i:06d}.gif"), v, fps=16)
        writers.save_png(str(tmp_path / f"{i:06d}_strip.png"), writers.frame_strip(v))
    (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
    head = {"weight": rng.normal(size=(1, 24)).astype(np.float32), "bias": np.ones(1, np.float32)}
    np.savez(tmp_path / "aes.npz", **head)
    tool.run_or_exit(tool.Options(videos=str(tmp_path), dino=TINY, clip_b32=CLIP, clip_l14=CLIP,
                                  aesthetic=str(tmp_path / "aes.npz"), clip_score=CLIP, score_frames=3))
    out = json.loads((tmp_path / "vbench.json").read_text())
    assert [r["video"] for r in out["per_video"]] == ["000000.gif", "000001.gif"]
    assert all(r["frames"] == 5 for r in out["per_video"])  # the merged frame came back
    flick = [ref_flicker(v) for v in videos]
    np.testing.assert_allclose([r["temporal_flickering"] for r in out["per_video"]], flick, rtol=1e-9)
    assert out["temporal_flickering"] == pytest.approx(np.mean(flick), rel=1e-9)
    dino = tool.load_dino(TINY)  # the tool's own (cached) model: its compiled functions are reused
    same = lambda fn, v: batching.map_fixed_batches(fn, v, 16)  # the tool's batches of 16 frames: the same program
    subj = [ref_consistency(same(dino.frame_features, v)) for v in videos]
    np.testing.assert_allclose([r["subject_consistency"] for r in out["per_video"]], [s[0] for s in subj], rtol=1e-9)
    assert out["subject_consistency"] == pytest.approx(sum(s[1] for s in subj) / sum(s[2] for s in subj), rel=1e-9)
    clip = tool.load_clip("clip_l14", CLIP)
    for r, v in zip(out["per_video"], videos):
        feats = same(lambda x: V.clip_frame_features(clip, x), v)
        assert r["background_consistency"] == pytest.approx(ref_consistency(feats)[0], rel=1e-9)
        unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        assert r["aesthetic_quality"] == pytest.approx(np.mean(unit @ head["weight"][0] + 1.0) / 10, rel=1e-5)
    tokens = clip.tokenize(["a cat"] * 3)
    frames = videos[0][[0, 2, 4]].astype(np.float32) / 127.5 - 1.0  # 3 evenly spaced frames of 5
    score = float(np.mean(tool._jit_score(clip)(clip.params, frames, tokens)))
    assert out["per_video"][0]["clip_score"] == pytest.approx(score, rel=1e-5)


@pytest.mark.parametrize("case, flags_, words", [
    ("missing", {"videos": "{tmp}/nope"}, "does not exist"),
    ("one_frame", {"videos": "{tmp}/one.npz"}, "has 1 frame"),
    ("strip", {"videos": "{tmp}/strip.png"}, "--strip_frames"),
    ("not_dino", {"videos": "{tmp}/two.npz", "dino": CLIP}, "not a bare ViT"),
    ("no_head", {"videos": "{tmp}/two.npz", "clip_l14": CLIP}, "needs both --aesthetic"),
    ("not_clip", {"videos": "{tmp}/two.npz", "clip_b32": TINY}, "'vit' model, not CLIP"),
    ("no_prompts", {"videos": "{tmp}/two.npz", "clip_score": CLIP}, "prompt"),
])
def test_command_line_refuses_in_one_line(tmp_path, case, flags_, words):
    np.savez(tmp_path / "one.npz", videos=np.zeros((1, 1, 8, 8, 3), np.uint8))
    np.savez(tmp_path / "two.npz", videos=np.zeros((2, 8, 8, 3), np.uint8))
    writers.save_png(str(tmp_path / "strip.png"), np.zeros((8, 24, 3), np.uint8))
    values = {k: v.format(tmp=tmp_path) for k, v in flags_.items()}
    with pytest.raises(SystemExit) as e:
        tool.run_or_exit(tool.Options(**values))
    text = str(e.value.code)
    assert words in text and "\n" not in text and text.startswith("VBench evaluation refused")
    assert not (tmp_path / "vbench.json").exists()
