"""Seeds x variants of one config, run one after another, and a results table with 95% intervals.

    python -m amd_jax.sweep --config=configs/toy2d.py --workdir=workdirs/toy2d_sweep --seeds=0,1,2 \
        --variant=dmd2:method=dmd2 --variant=amd:method=amd [--set=total_steps=3000 ...]

Every run is `python -m amd_jax.train` in its own process with `--config.seed=SEED` (the student's noise, the
re-noising and the GAN head's init; the data and the teacher stay fixed), in WORKDIR/VARIANT/seed_SEED; all runs share one teacher (WORKDIR/teacher, trained by
the first run when missing) and one compilation cache. Finished runs (eval.json present) are not run again, so
an interrupted sweep resumes. Writes WORKDIR/results.json and WORKDIR/results.md: per variant and metric the mean
and the half-width of the 95% Student-t interval over seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from absl import app, flags
from scipy import stats

_CONFIG = flags.DEFINE_string("config", None, "Config file, as for amd_jax.train.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Root of the sweep.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_VARIANTS = flags.DEFINE_multi_string("variant", ["dmd2:method=dmd2", "amd:method=amd"], "NAME:key=value,key=value")
_SET = flags.DEFINE_multi_string("set", [], "key=value overrides applied to every run.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, body = text.partition(":")
    if not name or any(not kv.count("=") for kv in filter(None, body.split(","))):
        raise ValueError(f"--variant={text!r}: expected NAME:key=value[,key=value...]")
    return name, [kv for kv in body.split(",") if kv]


def interval(values) -> tuple[float, float]:
    """(mean, half-width of the 95% Student-t interval); half-width 0 for a single value."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def summarize(results: dict[str, list[dict]]) -> tuple[dict, str]:
    """results[variant] = list of eval.json dicts -> (summary dict, markdown table)."""
    metrics = sorted({k for runs in results.values() for r in runs for k, v in r.items()
                      if isinstance(v, (int, float)) and k not in ("seed", "step", "num_samples")})
    summary = {name: {m: interval([r[m] for r in runs if m in r]) for m in metrics} for name, runs in results.items()}
    lines = ["| variant | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name, runs in results.items():
        cells = [f"{summary[name][m][0]:.4g} ± {summary[name][m][1]:.2g}" for m in metrics]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return summary, "\n".join(lines) + "\n"


def main(argv):
    del argv
    root = os.path.abspath(_WORKDIR.value)
    os.makedirs(root, exist_ok=True)
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.join(root, ".jax_cache")}
    common = [f"--config.{kv}" for kv in _SET.value] + [f"--config.teacher.dir={os.path.join(root, 'teacher')}"]
    variants = [parse_variant(v) for v in _VARIANTS.value]
    results = {}
    for name, overrides in variants:
        results[name] = []
        for seed in _SEEDS.value:
            wd = os.path.join(root, name, f"seed_{seed}")
            out = os.path.join(wd, "eval.json")
            if not os.path.exists(out):
                cmd = [sys.executable, "-m", "amd_jax.train", f"--config={_CONFIG.value}", f"--workdir={wd}",
                       f"--config.seed={seed}", *common,
                       *[f"--config.{kv}" for kv in overrides]]
                print("+", " ".join(cmd), flush=True)
                os.makedirs(wd, exist_ok=True)
                with open(os.path.join(wd, "train.log"), "a") as log:
                    subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
            with open(out) as f:
                results[name].append(json.load(f))
    summary, table = summarize(results)
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump({"summary": summary, "runs": results}, f, indent=2)
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    app.run(main)
