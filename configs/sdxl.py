"""sdxl: DMD2 / AMD distillation of SDXL base into a 4-step student at 1024 px (docs/METHOD.md section 2 recipe).

NOT RUN HERE: this config has been checked by shape (tests/test_sdxl_train.py traces its full training state and
FSDP sharding with jax.eval_shape) and compiled for TPU topologies by the real TPU compiler without a TPU
(python -m amd_jax.plan); the same code path runs end to end at tiny size (configs/sdxl_tiny.py).

Run (Cloud TPU pod, every host; see launch/ for the multi-host wrapper):
    python -m amd_jax.train --config=configs/sdxl.py --workdir=gs://BUCKET/runs/sdxl_amd \
        --config.model.path=gs://BUCKET/models/stable-diffusion-xl-base-1.0 \
        --config.reward.path=gs://BUCKET/models/hpsv2 \
        --config.data.path=gs://BUCKET/data/captions.txt
    DMD2 baseline: add --config.method=dmd2.  1-step student: --config.student.timesteps='(999,)'.
Inputs:
    model.path   diffusers SDXL folder (unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2), local
                 or gs://; `model.variant='fp16'` reads the *.fp16.safetensors files (half the download).
    reward.path  HPSv2 folder: open_clip_model.safetensors converted from HPS_v2_compressed.pt
                 (python -m amd_jax.tools.convert_openclip) + the ViT-H-14 tokenizer (vocab.json, merges.txt).
    data.path    captions: .txt (one per line) / .jsonl (data.field) / .parquet (needs pyarrow) / tfds:coco_captions
                 (prepared array_record). data.embeddings: optional precomputed prompt embeddings; data.real:
                 per-caption real latents [N, 4, 128, 128] (VAE-encoded images, e.g. LAION-aesthetics as DMD2),
                 REQUIRED while gan.enabled=True. Both are written by `python -m amd_jax.tools.prepare_sdxl` (its doc).
Hardware: a TPU v5p / v4 pod slice (global batch 128: 4 per chip on v5p-64). Training state (student + critic
    fp32 + both AdamW states, 2 x 2.57 B params) 62.2 GiB, sharded over fsdp=16: 3.9 GiB per device.
    Per-device peak HBM of each step, from the TPU compiler (python -m amd_jax.plan, README "On TPU pods"):
      v5p-64 (v5p:2x4x4, 4 images/chip, 95 GiB): generator 23.15 GiB, sample 15.12, critic 16.88, eval sampler
        15.12.
      v4 (v4:2x2x4, 16 chips = 32 TensorCore devices of 16 GiB, 4 images/device): critic 14.52 GiB, sample 15.14,
        generator DOES NOT FIT with the defaults (21.29 GiB of temporaries; the compiler allows 15.25); with
        --config.train.microbatches=4 --config.reward.chunks=4 it does: generator 9.40 GiB, sample 5.18.
      With --config.model.unet_attention=flash the v5p critic peaks at 13.60 GiB.
    With 256 chips the batch 128 cannot be split (data*fsdp must divide it): raise global_batch to 256.
Cost (jaxpr FLOPs per v5p chip, 4 images): an iteration (1 generator + 4 sample steps per 5, a critic step each)
    is 358 TFLOP = 13.2 student UNet forwards; the reward (VAE decode at 1024 px + HPSv2 ViT-H) is 1.6 UNet forwards
    per image, so AMD costs 1.14x DMD2 with reward.monitor=False (DMD2 with the monitor on pays the same as AMD).
Time (an estimate, not run): the compiler's estimates scaled to the jaxpr FLOPs give ~2.4 s per iteration on v5p-64,
    ~12.8 h for the 19k iterations (README "On TPU pods").
"""

import ml_collections

from amd_jax.config import base


def get_config():
    c = base()
    c.experiment = "sdxl"
    c.method = "amd"
    c.seed = 0
    c.total_steps = 19000  # DMD2 SDXL: ~19k iterations (generator updated every 5th)
    c.global_batch = 128

    c.model = ml_collections.ConfigDict()
    c.model.path = ""  # diffusers folder of stabilityai/stable-diffusion-xl-base-1.0 (local or gs://)
    c.model.variant = ""  # '' | 'fp16'
    c.model.resolution = 1024  # latents 128 x 128
    c.model.teacher_dtype = "bfloat16"  # frozen real teacher stored in bf16 (DMD2)
    c.model.compute_dtype = "bfloat16"  # UNet activations (student, critic, teacher); params stay fp32 for training
    c.model.text_dtype = "float32"
    c.model.uncond = "zeros"  # DMD2: zero text + pooled embeddings; 'empty_prompt' as an option
    c.model.exact_gelu = True
    # UNet implementation: 'diffusers' (FlaxUNet2DConditionModel) | 'owned' (amd_jax/models/sdxl/unet_flax.py, same
    # parameters and function); only 'owned' has unet_scan (one nn.scan per transformer stack: its params get a
    # leading layer axis) and unet_remat ('none' | 'block': every ResnetBlock and transformer layer | 'dots').
    # Use scan with remat: scan alone raised XLA's TPU temp bytes (a narrow UNet's grad, one v5p chip: 1253 MiB plain,
    # 2450 scan, 402 block, 235 scan+block, 698 scan+dots; compile 235 s plain, 99 s scan+block).
    # The default is what the TPU plan compiled and fitted at full size (README "On TPU pods"): the owned UNet,
    # scanned and remat'd per block. diffusers' UNet (no remat) never compiled its generator step within this
    # project's 23 GiB planning host.
    c.model.unet_impl = "owned"
    c.model.unet_scan = True
    c.model.unet_remat = "block"
    # Attention kernel of the owned UNet: 'xla' (einsums, float32 scores) | 'flash' (the Pallas TPU flash kernel,
    # per device over the batch axes; TPU only; the 77-token cross-attention stays on XLA: models/attention.py).
    c.model.unet_attention = "xla"

    c.data = ml_collections.ConfigDict()
    c.data.path = ""
    c.data.field = "caption"  # JSONL / parquet field (tfds:coco_captions: 'captions.text')
    c.data.tfds_dir = ""
    c.data.embeddings = ""  # optional .npz / .safetensors of prompt_embeds [N,77,2048] + text_embeds [N,1280]
    c.data.real = ""  # per-caption real latents for the GAN
    c.data.seed = -1  # -1 = config.seed

    c.student.timesteps = (999, 749, 499, 249)  # 4-step with backward simulation
    c.schedule.name = "ddpm"

    c.dmd.guidance_scale = 8.0
    c.dmd.t_min, c.dmd.t_max = 0.02, 0.98
    c.dmd.ttur = 5
    c.dmd.normalizer = "sample"

    # AMD knobs (docs/METHOD.md section 4); method=dmd2 ignores them.
    c.amd.s = 0.5
    c.amd.dsa_mode = "soft"
    c.amd.tau = 0.5
    c.amd.group_size = 1  # whole global batch = one group
    c.amd.rls_lambda = 1.0
    c.amd.rls_mode = "hard"

    c.reward.name = "hpsv2"
    c.reward.path = ""  # HPSv2 weight folder (local or gs://)
    c.reward.monitor = True
    c.reward.vae_dtype = "float32"  # SDXL VAE overflows in fp16; bf16 is an untested speed option

    c.gan.enabled = True
    c.gan.generator_weight = 5e-3
    c.gan.critic_weight = 1e-2
    c.gan.hidden = 256

    c.optim.student_lr = 5e-7
    c.optim.critic_lr = 5e-7
    c.optim.b1, c.optim.b2 = 0.9, 0.999
    c.optim.weight_decay = 0.01
    c.optim.warmup_steps = 500
    c.optim.grad_clip = 10.0

    # data-parallel over 'data', FSDP over 'fsdp' (the batch is split over both). Every UNet leaf with >= 2^18
    # elements (1 MiB fp32) is sharded on its largest dim divisible by 16; smaller leaves (norms, biases, small
    # convs: <1% of the bytes) are replicated to save all-gathers.
    c.mesh.axes = ("data", "fsdp")
    c.mesh.shape = (-1, 16)
    c.sharding.rules = ()
    c.sharding.fsdp_min_size = 2**18

    c.checkpoint.every = 500
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True
    c.log.every = 10
    c.log.sample_every = 1000
    c.log.sample_count = 128  # one global batch, decoded (and scored by eval.scorers, if set) in training

    c.eval = ml_collections.ConfigDict()
    c.eval.num_samples = 1024
    c.eval.at_end = True
    c.eval.prompts = ""  # caption file for evaluation ('' = the first captions of data.path)
    c.eval.grid_size = 64
    c.eval.grid_cols = 8
    # Offline evaluation (amd_jax/metrics/t2i.py): scorer name -> weight folder, '' = not scored (give at least one
    # that training never saw, e.g. --config.eval.scorers.pickscore=gs://B/models/pickscore); FID against reference
    # statistics (both paths or neither); diversity over K samples per prompt.
    c.eval.scorers = ml_collections.ConfigDict({"hpsv2": "", "pickscore": "", "clip_l14": "", "clip_g14": ""})
    c.eval.inception = ""  # converted pytorch-fid InceptionV3 weights (.safetensors / .npz)
    c.eval.fid_ref = ""  # mu/sigma .npz of the reference images (fid.save_stats), e.g. COCO-10k
    c.eval.samples_per_prompt = 1  # >= 2 adds 'diversity'
    c.eval.save_images = False  # the offline job writes every image + prompts.txt to DIR/eval/images_<step>/
    return c
