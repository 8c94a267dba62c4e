r"""Seeds x variants of one config, run one after another, and a results table with 95% intervals.

    python -m amd_jax.sweep --config=configs/toy2d.py --workdir=workdirs/toy2d_sweep --seeds=0,1,2 \
        --variant=dmd2:method=dmd2 --variant=amd:method=amd [--set=total_steps=3000 ...]
    python -m amd_jax.sweep --config=configs/digits.py --workdir=workdirs/digits_bench --variant_set=benchmark

`--variant_set` names a list in VARIANT_SETS (the benchmark's DMD2 vs AMD, the ablations s = 0, DSA only, RLS only,
a sweep of s, and 4-step students); `--variant` adds variants of your own.

Every run is `python -m amd_jax.train` in its own process with `--config.seed=SEED` (the student's noise, the
re-noising and the GAN head's init; the data and the teacher stay fixed), in WORKDIR/VARIANT/seed_SEED; all runs share one teacher (WORKDIR/teacher, trained by
the first run when missing) and one compilation cache (amd_jax/cli.py `use_compilation_cache`). Finished runs (eval.json present) are not run again, so
an interrupted sweep resumes. Writes WORKDIR/results.json and WORKDIR/results.md: per variant and metric the mean
and the half-width of the 95% Student-t interval over seeds, and the paired comparison against `--baseline` (default
dmd2): per metric the mean and 95% Student-t interval of (variant - baseline) over the seeds both ran, "resolved"
when the interval excludes 0 (amd_jax/sweep_analysis.py). Runs whose curves hold an ESCAPE metric also get `escaped`
(0/1) and `escape_step`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from absl import flags

from amd_jax import cli, paths
from amd_jax.sweep_analysis import load_run, paired, paired_table, plot_curves, sample_grids, summarize


FOUR_STEP = "student.timesteps=(1.0,0.75,0.5,0.25)"  # rectified flow: t = 1 is pure noise
# Decoupled-DMD (docs/METHOD.md section 4): own normalisers, the CA term re-noised at high noise
DECOUPLED = "dmd.decoupled_normalizer=True,dmd.ca_t_min=0.5,dmd.ca_t_max=0.98"
VARIANT_SETS = {
    "main": ["dmd2:method=dmd2", "amd:method=amd"],
    # docs/METHOD.md section 6: the ablations. amd_s0 (s = 0, lambda = 0) must reproduce dmd2 exactly.
    "benchmark": [
        "dmd2:method=dmd2",
        "amd:method=amd",
        "amd_s0:method=amd,amd.s=0.0,amd.rls_lambda=0.0",
        "dsa_only:method=amd,amd.rls_lambda=0.0",
        "rls_only:method=amd,amd.s=0.0",
        "amd_s0.25:method=amd,amd.s=0.25",
        "amd_s1.0:method=amd,amd.s=1.0",
        f"dmd2_4step:method=dmd2,{FOUR_STEP}",
        f"amd_4step:method=amd,{FOUR_STEP}",
    ],
    # issue 12 on zones2d (configs/zones2d.py): the methods, s, K, Decoupled-DMD and EMA; the first three first
    "zones": [
        "dmd2:method=dmd2",
        "amd:method=amd",
        "amd_hard:method=amd,amd.dsa_mode=hard",
        "dsa_only:method=amd,amd.rls_lambda=0.0",
        "rls_only:method=amd,amd.s=0.0",
        "amd_s0.25:method=amd,amd.s=0.25",
        "amd_s1.0:method=amd,amd.s=1.0",
        "amd_k4:method=amd,amd.group_size=4",
        f"dmd2_decoupled:method=dmd2,{DECOUPLED}",
        f"amd_decoupled:method=amd,{DECOUPLED}",
        "dmd2_ema:method=dmd2,student.ema_decay=0.999",
        "amd_ema:method=amd,student.ema_decay=0.999",
    ],
    # issue 23 on moving_mnist (configs/moving_mnist.py, which sets student.ema_decay: every run is also evaluated
    # with its EMA, eval.json's ema_* keys)
    "motion": [
        "dmd2:method=dmd2",
        "amd:method=amd",
        "amd_hard:method=amd,amd.dsa_mode=hard",
        "rls_only:method=amd,amd.s=0.0",
        "dsa_only:method=amd,amd.rls_lambda=0.0",
    ],
}


def define_flags():
    """The command line (defined on demand, so that importing this module defines no flags)."""
    flags.DEFINE_string("config", None, "Config file, as for amd_jax.train.")
    flags.DEFINE_string("workdir", None, "Root of the sweep.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
    flags.DEFINE_multi_string("variant", ["dmd2:method=dmd2", "amd:method=amd"], "NAME:key=value,key=value")
    flags.DEFINE_string("variant_set", "", "A name of VARIANT_SETS; replaces the default --variant list.")
    flags.DEFINE_multi_string("set", [], "key=value overrides applied to every run.")
    flags.DEFINE_list("columns", [], "Metrics shown in results.md, in this order (default: all).")
    flags.DEFINE_bool("report_only", False, "Run nothing: tabulate the runs that have finished.")
    flags.DEFINE_string("baseline", "dmd2", "The variant every other one is compared with, seed by seed.")
    flags.mark_flags_as_required(["config", "workdir"])


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, body = text.partition(":")
    pairs = [kv for kv in re.split(r",(?![^()]*\))", body) if kv]  # commas inside (...) belong to a tuple value
    if not name or any("=" not in kv for kv in pairs):
        raise ValueError(f"--variant={text!r}: expected NAME:key=value[,key=value...]")
    return name, pairs


def main(argv):
    del argv
    F = flags.FLAGS
    root, config = paths.workdir(F.workdir), paths.absolute(F.config)
    os.makedirs(root, exist_ok=True)
    env = {**os.environ, cli.CACHE_ENV: cli.use_compilation_cache()}  # every run: this one (off when '')
    common = [f"--config.{kv}" for kv in F.set] + [f"--config.teacher.dir={os.path.join(root, 'teacher')}"]
    given = F.variant if not F.variant_set or flags.FLAGS["variant"].present else []
    if F.variant_set and F.variant_set not in VARIANT_SETS:
        raise SystemExit(f"--variant_set={F.variant_set!r}: choose one of {sorted(VARIANT_SETS)}.")
    variants = [parse_variant(v) for v in VARIANT_SETS.get(F.variant_set, []) + given]
    # seed-major: an interrupted sweep has every variant on its first seeds (paired comparisons), not one variant
    for seed in [] if F.report_only else F.seeds:
        for name, overrides in variants:
            wd = os.path.join(root, name, f"seed_{seed}")
            if not os.path.exists(os.path.join(wd, "eval.json")):
                cmd = [sys.executable, "-m", "amd_jax.train", f"--config={config}", f"--workdir={wd}",
                       f"--config.seed={seed}", *common,
                       *[f"--config.{kv}" for kv in overrides]]
                print("+", " ".join(cmd), flush=True)
                os.makedirs(wd, exist_ok=True)
                with open(os.path.join(wd, "train.log"), "a") as log:
                    code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
                if code:
                    sys.exit(f"Run {name} seed {seed} failed (exit status {code}); its log: {log.name}. "
                             "Finished runs are kept: fix the cause and run the sweep again to go on.")
    results = {}
    for name, _ in variants:
        folders = [os.path.join(root, name, f"seed_{seed}") for seed in F.seeds]
        results[name] = [load_run(wd) for wd in folders
                         if os.path.exists(os.path.join(wd, "eval.json")) or not F.report_only]
    results = {name: runs for name, runs in results.items() if runs}
    summary, table = summarize(results, F.columns)
    diffs = paired(results, F.baseline) if F.baseline in results else {}
    if F.baseline not in results:
        table += f"\nNo paired comparison: the baseline variant {F.baseline!r} has no finished run (--baseline).\n"
    elif diffs:
        table += "\n" + paired_table(diffs, F.baseline, F.columns)
    if "dmd2" in results and "amd_s0" in results:
        numbers = lambda r: {k: v for k, v in r.items() if isinstance(v, (int, float))}
        same = [numbers(a) == numbers(b) for a, b in zip(results["dmd2"], results["amd_s0"])]
        table += f"\namd_s0 (s = 0, lambda = 0) identical to dmd2 (every eval.json value): {same}\n"
    figures = [plot_curves(root, [n for n, _ in variants], F.seeds),
               sample_grids(root, [n for n, _ in variants], F.seeds[0])]
    from amd_jax.writers import json_text

    # valid JSON: a NaN (e.g. the spread of a single seed) is written as null with a note (writers.json_text)
    text = json_text({"summary": summary, "baseline": F.baseline, "paired": diffs, "runs": results}, indent=2)
    with open(os.path.join(root, "results.json"), "w") as f:
        f.write(text)
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(table)
    print(table)
    print("figures:", ", ".join(f for f in figures if f))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
