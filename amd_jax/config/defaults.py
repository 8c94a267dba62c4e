"""Defaults shared by every experiment; a config file in configs/ starts from `base()` and overrides.

Every [choice] of docs/METHOD.md is a knob here (amd.*); amd_jax/config/checks.py says what each may be.
"""

from __future__ import annotations

import ml_collections


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = ""  # the task: a name of amd_jax.tasks (toy2d, digits, mnist, sdxl)
    c.method = "amd"  # 'dmd2' | 'amd'
    c.seed = 0
    c.total_steps = 1000
    c.global_batch = 128

    c.schedule = ml_collections.ConfigDict({"name": "ddpm", "kwargs": {}})
    c.student = ml_collections.ConfigDict({"timesteps": (999,)})  # DMD2 4-step: (999, 749, 499, 249)
    # ema_decay: an exponential moving average of the student, updated with every applied generator update and
    # evaluated beside it (ema/ metrics, ema_* keys in eval.json); 0 = off, e.g. 0.999 for long runs
    c.student.ema_decay = 0.0

    c.dmd = ml_collections.ConfigDict()
    c.dmd.guidance_scale = 8.0  # omega, DMD2 convention xr_u + omega (xr_c - xr_u)
    c.dmd.t_min = 0.02  # re-noise range as fractions of the time axis (DMD2: 20..980 of 1000)
    c.dmd.t_max = 0.98
    c.dmd.ttur = 5  # critic steps per generator step
    c.dmd.normalizer = "sample"  # DMD2's per-sample mean|x - xr_cfg|; 'batch' | 'none' for low-dimensional data
    # Decoupled DMD (docs/METHOD.md section 4): the DM and CA terms each over their own normaliser, and the CA term
    # at its own re-noise timestep t_ca in [ca_t_min, ca_t_max] (negative = the DM term's t, as DMD2).
    c.dmd.decoupled_normalizer = False
    c.dmd.ca_t_min = -1.0
    c.dmd.ca_t_max = -1.0

    c.amd = ml_collections.ConfigDict()
    c.amd.s = 0.5  # DSA strength: alpha, beta in [1 - s, 1 + s]
    c.amd.dsa_mode = "soft"  # 'soft' (advantage) | 'hard' (zone mask)
    c.amd.tau = 0.5  # zone mask m = 1[a~ < -tau]
    c.amd.group_size = 1  # K samples per prompt; 1 = the whole global batch is one group
    c.amd.std_floor = 0.0  # floor on std_g
    c.amd.adv_eps = 1e-6
    c.amd.adv_clip = 1.0
    c.amd.rls_lambda = 1.0  # Repulsive Landscape Sharpening strength
    c.amd.rls_mode = "hard"  # 'hard': w = 1 + lambda m | 'soft': w = 1 - lambda a~

    # monitor: compute rewards for dmd2 too; chunks: the reward (decode + score) in that many sequential pieces of
    # the batch, each holding rows of every device (peak memory / chunks, the same FLOPs; batching.sequential_chunks)
    c.reward = ml_collections.ConfigDict({"name": "", "monitor": True, "chunks": 1})

    c.gan = ml_collections.ConfigDict({"enabled": False, "generator_weight": 5e-3, "critic_weight": 1e-2})

    c.optim = ml_collections.ConfigDict()
    c.optim.student_lr = 5e-7
    c.optim.critic_lr = 5e-7
    c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
    c.optim.weight_decay = 0.01
    c.optim.warmup_steps = 500
    c.optim.grad_clip = 10.0

    # batch_axes: the mesh axes the batch is split over (FSDP splits it too, as in maxdiffusion); an axis not named
    # here (e.g. a context or tensor axis) holds every row of the batch
    c.mesh = ml_collections.ConfigDict({"axes": ("data", "fsdp"), "shape": (-1, 1), "batch_axes": ("data", "fsdp")})
    c.sharding = ml_collections.ConfigDict({"rules": (), "fsdp_min_size": 2**14})

    # max_nonfinite: stop after this many consecutive iterations whose update was skipped for a NaN/inf loss or
    # gradient (steps.py skips them; the newest checkpoint then still holds the last finite state);
    # profile_steps: (first, last) iterations traced by jax.profiler into WORKDIR/profile; () = off;
    # microbatches: the generator and critic losses and gradients accumulated over that many sequential pieces of
    # the batch (gradient accumulation: the same update, ~1/microbatches of the activation memory; a micro-batched
    # generator step runs the student's last step once more; steps.py)
    # max_skipped_fraction: a run that ends with more than this fraction of its iterations skipped (a NaN/inf
    # update) fails instead of writing eval.json (amd_jax/loop.py NonFiniteGuard.final_check); 1 = never
    c.train = ml_collections.ConfigDict({"max_nonfinite": 20, "profile_steps": (), "microbatches": 1,
                                         "max_skipped_fraction": 0.1})
    c.checkpoint = ml_collections.ConfigDict({"every": 500, "keep": 3, "async_save": True})
    # sample_every: images + the experiment's metrics on `sample_count` fresh samples (the in-training curves)
    c.log = ml_collections.ConfigDict({"every": 50, "sample_every": 500, "sample_count": 1024})
    c.eval = ml_collections.ConfigDict({"num_samples": 4096, "at_end": True})
    # more evaluators beside those two (amd_jax/evaluators.py): name -> {type, every, at_end, num_samples, seed}
    c.evals = ml_collections.ConfigDict()
    # Resuming a workdir whose checkpoint was trained with other values of training-semantics keys is refused
    # (check_resume); list the dotted keys or blocks changed on purpose, e.g. ('optim.student_lr',).
    c.resume = ml_collections.ConfigDict({"allow_changes": ()})
    return c


def teacher(steps: int, batch_size: int, lr: float, label_dropout: float = 0.1, seed: int = 0):
    """The `teacher` block of small experiments (amd_jax/tasks/teacher.py): a teacher trained on first use.

    dir '' = WORKDIR/teacher; a shared path lets several runs (a sweep) reuse one teacher."""
    return ml_collections.ConfigDict({"dir": "", "train_if_missing": True, "steps": steps, "batch_size": batch_size,
                                      "lr": lr, "label_dropout": label_dropout, "seed": seed})
