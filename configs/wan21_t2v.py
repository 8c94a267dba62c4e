"""wan21_t2v: AMD (or DMD2) distillation of Wan2.1-T2V-1.3B into a 3-step text-to-video student, 81 frames at
480x832, sequence-parallel over a 'context' mesh axis (amd_jax/tasks/wan; docs/METHOD.md "Video rewards").

NOT RUN HERE: the same code path trains end to end at tiny size on 8 simulated devices (configs/wan_tiny.py,
tests/test_wan_task.py). Plan figures (below; README "Wan2.1 text-to-video"): traced, and every step compiled
with libtpu for v5p:2x4x4 (v4:2x2x4: sample and critic) on a CPU host; nothing run on a TPU.

Run (Cloud TPU pod slice, every host; see launch/ for the multi-host wrapper):
    python -m amd_jax.train --config=configs/wan21_t2v.py --workdir=gs://BUCKET/runs/wan21_amd \
        --config.model.path=gs://BUCKET/models/Wan2.1-T2V-1.3B-Diffusers \
        --config.reward.path=gs://BUCKET/models/hpsv2 \
        --config.data.path=gs://BUCKET/data/video_captions.txt
    DMD2 baseline: --config.method=dmd2.  Plan: python -m amd_jax.plan --config=configs/wan21_t2v.py \
        --topology=v5p:2x4x4 --nocompile
Inputs:
    model.path   the diffusers folder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers (transformer/, vae/, text_encoder/,
                 tokenizer/), local or gs://. Empty or another model's folder is refused in one line.
    reward.path  HPSv2 folder (as configs/sdxl.py): scores reward.frames decoded frames per video.
    data.path    captions (.txt / .jsonl / .parquet); data.embeddings: optional precomputed umT5 embeddings 'text'
                 [N, 512, 4096]; data.real: per-caption real latents [N, 21, 60, 104, 16], needed with gan.enabled.
                 Or caption records holding all three, read per process by index (for large caption sets; then
                 data.embeddings and data.real stay empty): python -m amd_jax.tools.convert_inputs
                 --captions=captions.txt --embeddings=text.safetensors --real=latents.safetensors --out=DIR, then
                 --config.data.path=DIR.
Hardware: a TPU v5p pod slice, e.g. v5p-64 (v5p:2x4x4, 32 chips): mesh data 4 x fsdp 4 x context 2 (the 12 heads
    of the 1.3B model admit context 2, 3, 4, 6 or 12 with 'ulysses'; 'ring' takes any divisor of the 32,760 tokens),
    global batch 16: one video per data x fsdp shard, its tokens split over the 2 chips of its context group.
Plan (python -m amd_jax.plan --config=configs/wan21_t2v.py --topology=v5p:2x4x4 --nocompile, jaxpr FLOPs only):
    generator 1270 TFLOP/chip (8.98 student forwards), sample 421 (2.98), critic 566 (4.00); an iteration
    (1 generator + 4 sample steps per 5, a critic step each) 1157 TFLOP/chip = 8.18 forwards, 2.52 s at 100% of
    the v5p's bf16 peak (a lower bound on the time, not an estimate). DMD2 (reward.monitor=False): 1019 TFLOP/chip,
    AMD / DMD2 = 1.136 (all of it the reward's whole-video VAE decode).
    Compiled (one --steps at a time; libtpu counts the 30 scanned blocks once), peak GiB/chip and the compiler's
    estimate for its count: generator 65.08 GiB, 564.7 ms for 1/17.8 of the jaxpr FLOPs (27.5% MFU on its count);
    sample 27.95 GiB, 325.8 ms for 1/9.9 (28.5%); critic 54.37 GiB, 158.1 ms for 1/29.5 (26.4%); eval sampler (16
    videos) 27.95 GiB, 328.4 ms for 1/13.2 (28.3%). Scaled to the jaxpr FLOPs (estimates, not measurements):
    generator ~10.1 s, sample ~3.2 s, critic ~4.7 s, an iteration ~9.3 s (27% MFU), the 3,000 iterations ~7.7 h
    on 32 v5p chips.
    v4:2x2x4 (16 GiB per TensorCore device): the critic fits with --config.model.attention=flash
    '--config.mesh.shape=(1,16,2)' (10.73 GiB; XLA's [q, k] scores alone are ~24 GiB, and fsdp 4 leaves 7.97 GiB of
    arguments: 17.08 GiB). The reward's VAE decode does not fit: the sample step needs 19.72 GiB of temporaries
    with it, 1.50 without (DMD2, reward.monitor=False), so the AMD config does not run on v4 as it stands.
"""

import ml_collections

from amd_jax.config import base
from amd_jax.method.schedules import shift_sigma

SHIFT = 3.0  # Wan2.1 at 480P (diffusers' WanPipeline documentation)


def shifted(fraction: float, shift: float = SHIFT) -> float:
    """Wan's timestep shift of a fraction of the time axis (method/schedules.py shift_sigma), as a plain float."""
    return float(shift_sigma(fraction, shift))


def get_config():
    c = base()
    c.experiment = "wan"
    c.method = "amd"
    c.seed = 0
    c.total_steps = 3000
    c.global_batch = 16

    c.model = ml_collections.ConfigDict()
    c.model.path = ""  # diffusers Wan2.1-T2V-1.3B folder (local or gs://); empty: refused by the checks
    c.model.frames = 81  # 4k + 1 -> 21 latent frames
    c.model.height = 480  # multiples of 16 -> latents 60 x 104, 21 x 30 x 52 = 32,760 tokens
    c.model.width = 832
    c.model.text_len = 512  # umT5 tokens per prompt (WanPipeline's max_sequence_length)
    c.model.negative_prompt = ""  # diffusers' WanPipeline default
    c.model.teacher_dtype = "bfloat16"
    c.model.compute_dtype = "bfloat16"
    c.model.text_dtype = "bfloat16"
    c.model.remat = "block"  # each transformer block recomputed in the backward pass
    c.model.attention = "xla"  # 'flash' (Pallas TPU kernel per device) on TPU
    c.model.sequence_method = "ulysses"  # 'ring' for context sizes that do not divide the 12 heads

    c.data = ml_collections.ConfigDict()
    c.data.path = ""
    c.data.field = "caption"
    c.data.embeddings = ""
    c.data.real = ""
    c.data.seed = -1

    c.schedule.name = "shifted_rectified_flow"
    c.schedule.kwargs = ml_collections.ConfigDict({"shift": SHIFT})
    # 3-step student (FastVideo's Wan DMD uses 3): evenly spaced fractions of the shifted time axis
    c.student.timesteps = tuple(round(shifted(f), 6) for f in (1.0, 2 / 3, 1 / 3))

    c.dmd.guidance_scale = 5.0  # Wan2.1's default CFG (WanPipeline guidance_scale)
    c.dmd.t_min, c.dmd.t_max = 0.02, 0.98
    c.dmd.ttur = 5
    c.dmd.normalizer = "sample"

    c.amd.s = 0.5
    c.amd.dsa_mode = "soft"
    c.amd.tau = 0.5
    c.amd.group_size = 1
    c.amd.rls_lambda = 1.0
    c.amd.rls_mode = "hard"

    c.reward.name = "hpsv2"
    c.reward.path = ""
    c.reward.monitor = True
    c.reward.frames = 4  # decoded frames scored per video (evenly spaced, first and last included)
    # latent frames the reward decodes: 0 = all 21 (81 frames); k = the first k (frames 0 .. 4k - 4, the same pixels:
    # the VAE is causal). 6 = the first 21 frames (~1.3 s at 16 fps): AMD / DMD2 1.136 -> ~1.04 by the jaxpr (README)
    c.reward.latent_frames = 0
    c.reward.temporal_weight = 0.0  # the temporal-smoothness term rewards stillness: off by default
    c.reward.vae_dtype = "bfloat16"

    c.gan.enabled = False  # needs data.real (per-caption real video latents)
    c.gan.generator_weight = 5e-3
    c.gan.critic_weight = 1e-2
    c.gan.hidden = 256

    c.optim.student_lr = 2e-6
    c.optim.critic_lr = 2e-6
    c.optim.warmup_steps = 100

    c.mesh.axes = ("data", "fsdp", "context")
    c.mesh.shape = (-1, 4, 2)
    c.mesh.batch_axes = ("data", "fsdp")  # the context axis splits each video's tokens, not the batch
    c.sharding.rules = ()
    c.sharding.fsdp_min_size = 2**18

    c.checkpoint.every = 250
    c.log.every = 10
    c.log.sample_every = 500
    c.log.sample_count = 16

    c.eval = ml_collections.ConfigDict()
    c.eval.num_samples = 64
    c.eval.at_end = True
    c.eval.prompts = ""
    c.eval.grid_size = 8
    c.eval.frames = 6  # frames per strip in the sample grid
    c.eval.samples_per_prompt = 1
    c.eval.save_images = False  # the offline job writes every video (GIF + frame strip PNG) + prompts.txt
    return c
