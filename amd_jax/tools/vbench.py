"""Offline VBench-style evaluation of generated videos (issue 22 item 9): the dimensions of amd_jax/metrics/vbench.py
plus per-frame HPSv2 and CLIP score, written to one JSON.

    python -m amd_jax.tools.vbench --videos=WORKDIR/eval/images_0000100 --dino=DIR/dino-vitb16 \\
        --clip_b32=DIR/clip-vit-base-patch32 --clip_l14=DIR/clip-vit-large-patch14 \\
        --aesthetic=laion_aesthetic.npz --hpsv2=DIR/hpsv2 --clip_score=DIR/clip-vit-large-patch14 [--out=FILE]

--videos: a folder as a Wan run's evaluation writes it (eval.save_images: NNNNNN.gif + prompts.txt, one line per
video), a folder of .npz files, or one .gif / .npz / frame-strip .png. An .npz holds uint8 [T, H, W, 3] or
[N, T, H, W, 3] (key 'videos' or its only array; float arrays are read as [-1, 1] and rounded to uint8 as the Wan
task decodes); a strip PNG needs --strip_frames. GIFs are read as VBench reads them (PIL, RGB) and a frame that
Pillow merged with identical successors (amd_jax/writers.py) is repeated by its duration / (1000 / --fps).
Every metric whose model is given runs; temporal flickering always runs (it needs none). Dynamic degree is not
run: it needs RAFT optical flow, which this project does not have (metrics/vbench.py `dynamic_degree` takes flows).
Model folders: --dino facebook/dino-vitb16 (config.json + model.safetensors | flax_model.msgpack); --clip_b32
(background consistency, VBench's ViT-B/32) and --clip_l14 (aesthetic quality's CLIP) transformers CLIPModel folders
(openai/clip-vit-base-patch32, openai/clip-vit-large-patch14); --aesthetic the .npz of
amd_jax.tools.convert_aesthetic; --hpsv2 / --clip_score the reward folders of models/rewards/registry.py ('hpsv2',
'clip_l14'), scoring --score_frames evenly spaced frames per video against its prompt (models/rewards/video.py).
The JSON (--out, default VIDEOS/vbench.json): each dimension's VBench aggregate, and per video its scores.
Every input is checked before any model loads; a bad one is one line naming it and the fix.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

os.environ.setdefault("USE_TF", "0")  # before transformers is imported: it must not load TensorFlow

import numpy as np  # noqa: E402

from amd_jax import cli, paths  # noqa: E402
from amd_jax.errors import ConfigError, DamagedFileError  # noqa: E402

_HELP = {  # flag -> help; each is an Options field (the flags exist only when the module runs as a script)
    "videos": "A folder of .gif (+ prompts.txt) or .npz videos, or one video file.",
    "out": "The JSON to write (default: VIDEOS/vbench.json, or next to a single file).",
    "dino": "facebook/dino-vitb16 folder: subject consistency.",
    "clip_b32": "openai/clip-vit-base-patch32 folder: background consistency.",
    "clip_l14": "openai/clip-vit-large-patch14 folder: aesthetic quality's CLIP.",
    "aesthetic": "LAION aesthetic head .npz (amd_jax.tools.convert_aesthetic).",
    "hpsv2": "HPSv2 reward folder (models/rewards/registry.py 'hpsv2').",
    "clip_score": "CLIP ViT-L/14 folder for the CLIP score ('clip_l14' reward).",
    "prompts": "One prompt per video (default: VIDEOS/prompts.txt).",
    "score_frames": "Frames per video scored by HPSv2 / CLIP score.",
    "strip_frames": "Frames side by side in a strip .png.",
    "fps": "The GIFs' frame rate (Wan writes 16): restores frames Pillow merged.",
    "chunk": "Frames per network call.",
}
_PATHS = ("videos", "out", "dino", "clip_b32", "clip_l14", "aesthetic", "hpsv2", "clip_score", "prompts")


@dataclasses.dataclass(frozen=True)
class Options:
    """What the flags say (paths as given; `absolute()` resolves them)."""

    videos: str
    out: str = ""
    dino: str = ""
    clip_b32: str = ""
    clip_l14: str = ""
    aesthetic: str = ""
    hpsv2: str = ""
    clip_score: str = ""
    prompts: str = ""
    score_frames: int = 8
    strip_frames: int = 0
    fps: float = 16.0
    chunk: int = 16

    def absolute(self) -> "Options":
        return dataclasses.replace(self, **{k: paths.absolute(getattr(self, k)) for k in _PATHS if getattr(self, k)})


# ------------------------------------------------------------------------------------------------ reading
def video_files(path: str) -> list[str]:
    """The video files of `path` (a folder: its .gif, else its .npz, else its .png, sorted; or one file)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise ConfigError(f"--videos={path} does not exist; give the folder a Wan evaluation wrote (eval.save_images: "
                          f"NNNNNN.gif + prompts.txt) or one .gif / .npz file.")
    for ext in (".gif", ".npz", ".png"):
        found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(ext))
        if found:
            return found
    raise ConfigError(f"--videos={path} holds no .gif, .npz or .png; give the folder a Wan evaluation wrote "
                      f"(eval.save_images=True writes NNNNNN.gif + prompts.txt).")


def read_gif(path: str, fps: float) -> np.ndarray:
    """uint8 [T, H, W, 3]: every frame as RGB (VBench's load_video), a merged run repeated by its duration."""
    from PIL import Image, ImageSequence

    base = 1000.0 / fps
    frames = []
    with Image.open(path) as img:
        for frame in ImageSequence.Iterator(img):
            repeat = max(1, round(frame.info.get("duration", base) / base))
            frames += [np.asarray(frame.convert("RGB"), np.uint8)] * repeat
    return np.stack(frames)


def read_videos(path: str, fps: float, strip_frames: int) -> list[tuple[str, np.ndarray]]:
    """[(name, uint8 [T, H, W, 3])] of one file (an .npz may hold several videos)."""
    name = os.path.basename(path)
    low = name.lower()
    if low.endswith(".gif"):
        return [(name, read_gif(path, fps))]
    if low.endswith(".png"):
        from PIL import Image

        with Image.open(path) as img:
            strip = np.asarray(img.convert("RGB"), np.uint8)
        if strip_frames < 2 or strip.shape[1] % strip_frames:
            raise ConfigError(f"{path} is a frame strip {strip.shape[1]} px wide: give --strip_frames=K (>= 2, "
                              f"dividing the width) as the run's eval.frames, or point --videos at its .gif files.")
        return [(name, np.stack(np.split(strip, strip_frames, axis=1)))]
    if low.endswith(".npz"):
        from amd_jax import tensor_files

        raw = tensor_files.read(path)
        arr = raw.get("videos", next(iter(raw.values())) if len(raw) == 1 else None)
        if arr is None or arr.ndim not in (4, 5) or arr.shape[-1] != 3:
            raise ConfigError(f"{path} holds {({k: v.shape for k, v in raw.items()})}; it needs 'videos' (or one "
                              f"array) uint8 [T, H, W, 3] or [N, T, H, W, 3].")
        if arr.dtype != np.uint8:
            arr = np.round((np.asarray(arr, np.float32) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
        arr = arr[None] if arr.ndim == 4 else arr
        return [(name if len(arr) == 1 else f"{name}[{i}]", v) for i, v in enumerate(arr)]
    raise ConfigError(f"{path}: not a .gif, .npz or .png video.")


# ------------------------------------------------------------------------------------- checks (no model)
def _clip_folder(flag: str, path: str) -> dict:
    """The config of a transformers CLIPModel folder, or ConfigError naming the flag and the fix."""
    import json

    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        raise ConfigError(f"--{flag}={path}: no config.json there; give a transformers CLIPModel folder "
                          f"(config.json, model.safetensors, tokenizer files) such as openai/clip-vit-large-patch14.")
    raw = json.loads(open(cfg).read())
    if raw.get("model_type") != "clip":
        raise ConfigError(f"--{flag}={path}: config.json is a {raw.get('model_type')!r} model, not CLIP; give a "
                          f"transformers CLIPModel folder such as openai/clip-vit-large-patch14.")
    return raw


def check_inputs(o: Options, videos, prompts_path: str) -> list[str] | None:
    """Every flag and video checked before a model loads; returns the prompts (None when no scorer needs them)."""
    from amd_jax.metrics import vbench as V

    for name, v in videos:
        if v.shape[0] < 2:
            raise ConfigError(f"{name} has {v.shape[0]} frame: VBench's dimensions compare frames and need >= 2; "
                              f"give the run's videos (.gif), or --strip_frames for a strip .png.")
    if o.dino:
        V.dino_config(o.dino)
    if o.clip_b32:
        _clip_folder("clip_b32", o.clip_b32)
    if bool(o.aesthetic) != bool(o.clip_l14):
        raise ConfigError("aesthetic quality needs both --aesthetic (the LAION head .npz) and --clip_l14 (its CLIP "
                          "ViT-L/14 folder); give both or neither.")
    if o.aesthetic:
        dim = _clip_folder("clip_l14", o.clip_l14).get("projection_dim", 512)
        if not os.path.isfile(o.aesthetic):
            raise ConfigError(f"--aesthetic={o.aesthetic} does not exist; convert sa_0_4_vit_l_14_linear.pth "
                              f"with python -m amd_jax.tools.convert_aesthetic.")
        V.load_aesthetic_head(o.aesthetic, dim)
    if o.clip_score:
        _clip_folder("clip_score", o.clip_score)
    if o.hpsv2 and not os.path.isdir(o.hpsv2):
        raise ConfigError(f"--hpsv2={o.hpsv2} is not a folder; give the open_clip folder that "
                          f"python -m amd_jax.tools.convert_openclip writes from HPS_v2_compressed.pt.")
    if not (o.hpsv2 or o.clip_score):
        return None
    if not os.path.isfile(prompts_path):
        raise ConfigError(f"HPSv2 / CLIP score need one prompt per video: {prompts_path} does not exist; give "
                          f"--prompts=FILE (one line per video, in the videos' sorted order).")
    prompts = open(prompts_path).read().splitlines()
    if len(prompts) < len(videos):
        raise ConfigError(f"{prompts_path} has {len(prompts)} prompts for {len(videos)} videos; give one line per "
                          f"video.")
    return prompts[:len(videos)]


# ------------------------------------------------------------------------------------------------ metrics
@functools.lru_cache(maxsize=None)
def load_dino(path: str):
    """metrics/vbench.py's DINO ViT of `path`, loaded once per process."""
    from amd_jax.metrics import vbench as V

    return V.load_dino(path)


@functools.lru_cache(maxsize=None)
def load_clip(name: str, path: str):
    """The reward registry's scorer `name` of `path`, loaded once per process (one folder may serve several flags:
    its jitted functions are then compiled once)."""
    from amd_jax.models.rewards import registry

    return registry.load_reward(name, path)


@functools.lru_cache(maxsize=None)
def _jit_score(scorer):
    import jax

    return jax.jit(scorer.score)


def evaluate(o: Options, videos, prompts) -> dict:
    """{dimension: VBench aggregate, 'per_video': [...]} for the models `o` names."""
    import jax.numpy as jnp

    from amd_jax import batching
    from amd_jax.metrics import vbench as V
    from amd_jax.models.rewards import video as video_reward

    chunk = o.chunk
    feats = {}  # dimension -> frames [T, H, W, 3] -> features [T, D]
    if o.dino:
        dino = load_dino(o.dino)
        feats["subject_consistency"] = lambda f: batching.map_fixed_batches(dino.frame_features, f, chunk)
    if o.clip_b32:
        b32 = load_clip("clip_l14", o.clip_b32)  # any transformers CLIPModel folder
        feats["background_consistency"] = lambda f: batching.map_fixed_batches(
            lambda x: V.clip_frame_features(b32, x), f, chunk)
    if o.aesthetic:
        l14 = load_clip("clip_l14", o.clip_l14)
        head = V.load_aesthetic_head(o.aesthetic, l14.config.projection_dim)
        feats["aesthetic_quality"] = lambda f: batching.map_fixed_batches(
            lambda x: V.clip_frame_features(l14, x), f, chunk)
    scorers = {}
    for key, name, path in (("hpsv2", "hpsv2", o.hpsv2), ("clip_score", "clip_l14", o.clip_score)):
        if path:
            s = load_clip(name, path)
            scorers[key] = (s, _jit_score(s), s.tokenize(prompts))
    rows, terms = [], {k: [] for k in ("subject_consistency", "background_consistency")}
    for i, (name, frames) in enumerate(videos):
        row = {"video": name, "frames": int(frames.shape[0]), "temporal_flickering": V.temporal_flickering(frames)}
        for dim, fn in feats.items():
            f = fn(frames)
            if dim == "aesthetic_quality":
                row[dim] = V.aesthetic_quality(f, *head)
            else:
                terms[dim].append(V.consistency_terms(f))
                row[dim] = float(np.mean(terms[dim][-1]))
        x = jnp.asarray(frames[None], jnp.float32) / 127.5 - 1.0
        for key, (s, score, tokens) in scorers.items():
            row[key] = float(video_reward.video_reward(score, s.params, x, tokens[i:i + 1], o.score_frames)[0])
        rows.append(row)
        print(f"[{i + 1}/{len(videos)}] {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in row.items()
                                                             if isinstance(v, float)), flush=True)
    out = {"num_videos": len(rows), "per_video": rows}
    for dim in rows[0]:
        if dim in terms and terms[dim]:
            out[dim] = V.consistency_aggregate(terms[dim])  # VBench's sim / cnt
        elif isinstance(rows[0][dim], float):
            out[dim] = float(np.mean([r[dim] for r in rows]))
    out["models"] = {k: v for k, v in (("dino", o.dino), ("clip_b32", o.clip_b32),
                                       ("clip_l14", o.clip_l14), ("aesthetic", o.aesthetic),
                                       ("hpsv2", o.hpsv2), ("clip_score", o.clip_score)) if v}
    if scorers:
        out["score_frames"] = o.score_frames
    return out


def run(o: Options) -> str:
    """Read, check, evaluate and write the JSON; returns its path. ConfigError & co. for bad input, raised before
    any model loads."""
    o = o.absolute()
    folder = o.videos if os.path.isdir(o.videos) else os.path.dirname(o.videos)
    videos = [v for f in video_files(o.videos) for v in read_videos(f, o.fps, o.strip_frames)]
    prompts = check_inputs(o, videos, o.prompts or os.path.join(folder, "prompts.txt"))
    out = evaluate(o, videos, prompts)
    from amd_jax import writers

    path = o.out or os.path.join(folder, "vbench.json")
    writers.save_json(path, out)
    print(f"wrote {path}: " + ", ".join(f"{k}={v:.4f}" for k, v in out.items() if isinstance(v, float)))
    return path


def run_or_exit(o: Options) -> str:
    """`run`, a refusal as one line (the problem and the fix) and a non-zero exit."""
    try:
        return run(o)
    except (ConfigError, DamagedFileError, FileNotFoundError, ValueError) as e:  # ValueError: weights vs config
        sys.exit(f"VBench evaluation refused: {e}")


def _define_flags() -> None:
    from absl import flags

    for field in dataclasses.fields(Options):
        define = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float}[
            {"str": str, "int": int, "float": float}[field.type]]
        define(field.name, None if field.name == "videos" else field.default, _HELP[field.name])
    flags.mark_flags_as_required(["videos"])


def main(argv):
    del argv
    from absl import flags

    run_or_exit(Options(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(Options)}))


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
