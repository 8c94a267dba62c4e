"""Defaults shared by every experiment; a config file in configs/ starts from `base()` and overrides.

Every [choice] of docs/METHOD.md is a knob here (amd.*). `validate` refuses a config that cannot run, before anything
is compiled, with the fix in the message.
"""

from __future__ import annotations

import ml_collections

from amd_jax.errors import ConfigError


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = ""  # key of amd_jax.experiments.EXPERIMENTS
    c.method = "amd"  # 'dmd2' | 'amd'
    c.seed = 0
    c.total_steps = 1000
    c.global_batch = 128

    c.schedule = ml_collections.ConfigDict({"name": "ddpm", "kwargs": {}})
    c.student = ml_collections.ConfigDict({"timesteps": (999,)})  # DMD2 4-step: (999, 749, 499, 249)

    c.dmd = ml_collections.ConfigDict()
    c.dmd.guidance_scale = 8.0  # omega, DMD2 convention xr_u + omega (xr_c - xr_u)
    c.dmd.t_min = 0.02  # re-noise range as fractions of the time axis (DMD2: 20..980 of 1000)
    c.dmd.t_max = 0.98
    c.dmd.ttur = 5  # critic steps per generator step
    c.dmd.normalizer = "sample"  # DMD2's per-sample mean|x - xr_cfg|; 'batch' | 'none' for low-dimensional data

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

    c.reward = ml_collections.ConfigDict({"name": "", "monitor": True})  # monitor: compute rewards for dmd2 too

    c.gan = ml_collections.ConfigDict({"enabled": False, "generator_weight": 5e-3, "critic_weight": 1e-2})

    c.optim = ml_collections.ConfigDict()
    c.optim.student_lr = 5e-7
    c.optim.critic_lr = 5e-7
    c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
    c.optim.weight_decay = 0.01
    c.optim.warmup_steps = 500
    c.optim.grad_clip = 10.0

    c.mesh = ml_collections.ConfigDict({"axes": ("data", "fsdp"), "shape": (-1, 1)})
    c.sharding = ml_collections.ConfigDict({"rules": (), "fsdp_min_size": 2**14})

    # max_nonfinite: stop after this many consecutive iterations whose update was skipped for a NaN/inf loss or
    # gradient (steps.py skips them; the newest checkpoint then still holds the last finite state)
    c.train = ml_collections.ConfigDict({"max_nonfinite": 20})
    c.checkpoint = ml_collections.ConfigDict({"every": 500, "keep": 3, "async_save": True})
    # sample_every: images + the experiment's metrics on `sample_count` fresh samples (the in-training curves)
    c.log = ml_collections.ConfigDict({"every": 50, "sample_every": 500, "sample_count": 1024})
    c.eval = ml_collections.ConfigDict({"num_samples": 4096, "at_end": True})
    return c


def teacher(steps: int, batch_size: int, lr: float, label_dropout: float = 0.1, seed: int = 0):
    """The `teacher` block of small experiments (amd_jax/teacher.py): a teacher trained on first use.

    dir '' = WORKDIR/teacher; a shared path lets several runs (a sweep) reuse one teacher."""
    return ml_collections.ConfigDict({"dir": "", "train_if_missing": True, "steps": steps, "batch_size": batch_size,
                                      "lr": lr, "label_dropout": label_dropout, "seed": seed})


def validate(c, num_devices: int, num_processes: int = 1) -> None:
    """Every check that needs no compilation. Raises ConfigError naming the key and the fix."""
    from amd_jax.parallel.mesh import resolve_mesh_shape

    def need(ok, msg):
        if not ok:
            raise ConfigError(msg)

    need(c.method in ("dmd2", "amd"), f"method={c.method!r}: use --config.method=dmd2 or --config.method=amd.")
    need(c.dmd.normalizer in ("sample", "batch", "none"), f"dmd.normalizer={c.dmd.normalizer!r}: use 'sample', 'batch' or 'none'.")
    need(c.dmd.ttur >= 1, f"dmd.ttur={c.dmd.ttur}: the critic/generator update ratio must be >= 1.")
    need(0.0 <= c.dmd.t_min <= c.dmd.t_max <= 1.0, f"dmd.t_min/t_max={c.dmd.t_min}/{c.dmd.t_max}: need 0 <= t_min <= t_max <= 1.")
    need(len(c.student.timesteps) >= 1, "student.timesteps is empty: give at least one timestep, e.g. (999,).")
    need(c.amd.s >= 0, f"amd.s={c.amd.s}: the DSA strength must be >= 0.")
    need(c.amd.dsa_mode in ("soft", "hard"), f"amd.dsa_mode={c.amd.dsa_mode!r}: use 'soft' or 'hard'.")
    need(c.amd.rls_mode in ("soft", "hard"), f"amd.rls_mode={c.amd.rls_mode!r}: use 'soft' or 'hard'.")
    need(c.amd.rls_lambda >= 0, f"amd.rls_lambda={c.amd.rls_lambda}: must be >= 0.")
    need(
        c.amd.rls_mode != "soft" or c.amd.rls_lambda * c.amd.adv_clip < 1.0,
        f"amd.rls_mode='soft' with rls_lambda={c.amd.rls_lambda} and adv_clip={c.amd.adv_clip} can make weights <= 0: "
        "keep rls_lambda * adv_clip < 1.",
    )
    need(c.amd.adv_clip > 0, f"amd.adv_clip={c.amd.adv_clip}: must be > 0.")
    shape = dict(zip(c.mesh.axes, resolve_mesh_shape(c.mesh.axes, c.mesh.shape, num_devices)))
    need("data" in shape, f"mesh.axes={tuple(c.mesh.axes)} has no 'data' axis.")
    dp = shape.get("data", 1) * shape.get("fsdp", 1)
    need(
        c.global_batch % dp == 0,
        f"global_batch={c.global_batch} is not divisible by the data-parallel size data*fsdp={dp} of mesh {shape}: "
        f"set --config.global_batch to a multiple of {dp}.",
    )
    need(
        c.global_batch % num_processes == 0,
        f"global_batch={c.global_batch} is not divisible by the {num_processes} processes.",
    )
    need(
        c.eval.num_samples >= c.global_batch,
        f"eval.num_samples={c.eval.num_samples} is smaller than one global batch ({c.global_batch}): samples are "
        "generated a global batch at a time; raise eval.num_samples.",
    )
    need(
        not c.log.sample_every or c.log.sample_count >= c.global_batch,
        f"log.sample_count={c.log.sample_count} is smaller than one global batch ({c.global_batch}): raise it, or "
        "set log.sample_every=0.",
    )
    k = c.amd.group_size
    need(
        k in (0, 1) or c.global_batch % k == 0,
        f"amd.group_size={k} does not divide global_batch={c.global_batch}: choose K with global_batch % K == 0.",
    )


def load(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Load configs/NAME.py's get_config() from a file path (as --config does) and apply dotted overrides."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("amd_jax_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"Unknown config key {key!r}.")
        node[leaf] = value
    return config
