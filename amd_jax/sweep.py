"""Seeds x variants of one config, run one after another, and a results table with 95% intervals.

    python -m amd_jax.sweep --config=configs/toy2d.py --workdir=workdirs/toy2d_sweep --seeds=0,1,2 \
        --variant=dmd2:method=dmd2 --variant=amd:method=amd [--set=total_steps=3000 ...]
    python -m amd_jax.sweep --config=configs/digits.py --workdir=workdirs/digits_bench --variant_set=benchmark

`--variant_set` names a list in VARIANT_SETS (the benchmark's DMD2 vs AMD, the ablations s = 0, DSA only, RLS only,
a sweep of s, and 4-step students); `--variant` adds variants of your own.

Every run is `python -m amd_jax.train` in its own process with `--config.seed=SEED` (the student's noise, the
re-noising and the GAN head's init; the data and the teacher stay fixed), in WORKDIR/VARIANT/seed_SEED; all runs share one teacher (WORKDIR/teacher, trained by
the first run when missing) and one compilation cache. Finished runs (eval.json present) are not run again, so
an interrupted sweep resumes. Writes WORKDIR/results.json and WORKDIR/results.md: per variant and metric the mean
and the half-width of the 95% Student-t interval over seeds, and the paired comparison against `--baseline` (default
dmd2): per metric the mean and 95% Student-t interval of (variant - baseline) over the seeds both ran, "resolved"
when the interval excludes 0. Runs whose curves hold an ESCAPE metric also get `escaped` (0/1) and `escape_step`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
from absl import flags
from scipy import stats

from amd_jax import cli, paths


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
}
# curve key -> threshold: a run has escaped from the step on which the curve stays below the threshold to its end
# (zones2d's ground-truth zone fraction; the clean data's is 0)
ESCAPE = {"sample_eval/gt_zone_fraction": 0.01}
CURVES = ("zone_fraction", "sample_eval/gt_zone_fraction", "gt_zone/xf_minus_x", "gt_zone/cfg_minus_xf", "reward_mean",
          "sample_eval/fid", "sample_eval/class_accuracy", "loss_fake")


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


def interval(values) -> tuple[float, float]:
    """(mean, half-width of the 95% Student-t interval); half-width 0 for a single value."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def summarize(results: dict[str, list[dict]], columns=()) -> tuple[dict, str]:
    """results[variant] = list of eval.json dicts -> (summary dict, markdown table of `columns` or of all). A metric
    only some variants report (ema_*) is left out of the others' summaries, and their cells are empty."""
    metrics = sorted({k for runs in results.values() for r in runs for k, v in r.items() if _is_metric(k, v)})
    summary = {name: {m: interval([r[m] for r in runs if m in r]) for m in metrics if any(m in r for r in runs)}
               for name, runs in results.items()}
    metrics = [m for m in columns if m in metrics] if columns else metrics
    lines = ["| variant | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name, runs in results.items():
        cells = [f"{summary[name][m][0]:.4g} ± {summary[name][m][1]:.2g}" if m in summary[name] else ""
                 for m in metrics]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return summary, "\n".join(lines) + "\n"


def paired(results: dict[str, list[dict]], baseline: str) -> dict:
    """{variant: {metric: {'mean', 'half_width', 'n', 'resolved'}}}: the 95% Student-t interval of (variant -
    baseline) over the seeds both have a number for, per metric both report; resolved when n >= 2 and the interval
    excludes 0. The baseline itself is left out."""
    by_seed = lambda runs: {r["seed"]: r for r in runs}
    base, out = by_seed(results[baseline]), {}
    for name, runs in results.items():
        if name == baseline:
            continue
        both = [(r, base[seed]) for seed, r in by_seed(runs).items() if seed in base]
        metrics = sorted({k for r, b in both for k in r if k in b and _is_metric(k, r[k]) and _is_metric(k, b[k])})
        out[name] = {}
        for m in metrics:
            diffs = [r[m] - b[m] for r, b in both if m in r and m in b]
            mean, half = interval(diffs)
            out[name][m] = {"mean": mean, "half_width": half, "n": len(diffs),
                            "resolved": len(diffs) >= 2 and abs(mean) > half}
    return out


def paired_table(diffs: dict, baseline: str, columns=()) -> str:
    """Markdown: per variant and metric 'mean ± half-width (n)' of (variant - baseline), '*' when resolved."""
    metrics = sorted({m for d in diffs.values() for m in d})
    metrics = [m for m in columns if m in metrics] if columns else metrics
    lines = [f"Paired differences (variant - {baseline}, same seed): mean ± half-width of the 95% Student-t "
             "interval (seeds); * = resolved (the interval excludes 0)", "",
             "| variant | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, d in diffs.items():
        cells = [f"{d[m]['mean']:+.3g} ± {d[m]['half_width']:.2g} ({d[m]['n']}){' *' if d[m]['resolved'] else ''}"
                 if m in d else "" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _is_metric(key: str, value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("seed", "step",
                                                                                          "num_samples")


def escape_metrics(rows: list[dict]) -> dict:
    """{'escaped': 0/1, 'escape_step': step (escaped runs only)} per ESCAPE curve found in a run's metrics rows:
    the first logged step from which the curve stays below its threshold to the run's last logged value."""
    out = {}
    for key, threshold in ESCAPE.items():
        curve = sorted({row["step"]: row[key] for row in rows if key in row}.items())
        if not curve:
            continue
        below = [v < threshold for _, v in curve]
        first = len(below) - next((i for i, b in enumerate(reversed(below)) if not b), len(below))
        out["escaped"] = float(first < len(curve))
        if first < len(curve):
            out["escape_step"] = curve[first][0]
    return out


def load_run(wd: str) -> dict:
    """A finished run's eval.json with its escape metrics (from metrics.jsonl) added."""
    from amd_jax.writers import read_jsonl

    with open(os.path.join(wd, "eval.json")) as f:
        result = json.load(f)
    curves = os.path.join(wd, "metrics.jsonl")
    return {**result, **escape_metrics(read_jsonl(curves) if os.path.exists(curves) else [])}


def main(argv):
    del argv
    F = flags.FLAGS
    root, config = paths.workdir(F.workdir), paths.absolute(F.config)
    os.makedirs(root, exist_ok=True)
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.join(root, ".jax_cache")}
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
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump({"summary": summary, "baseline": F.baseline, "paired": diffs, "runs": results}, f, indent=2)
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(table)
    print(table)
    print("figures:", ", ".join(f for f in figures if f))


def plot_curves(root: str, names: list[str], seeds: list[str], keys=CURVES) -> str | None:
    """WORKDIR/curves.png: per metric, each variant's mean over seeds (band: min..max) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from amd_jax.writers import read_jsonl

    runs = {n: [read_jsonl(os.path.join(root, n, f"seed_{s}", "metrics.jsonl")) for s in seeds] for n in names}
    keys = [k for k in keys if any(k in row for rows in runs.values() for r in rows for row in r)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, per_seed in runs.items():
            curves = [c for c in ({row["step"]: row[key] for row in rows if key in row} for rows in per_seed) if c]
            steps = sorted(set.intersection(*[set(c) for c in curves])) if curves else []
            if not steps:
                continue
            v = np.asarray([[c[s] for s in steps] for c in curves])
            ax.plot(steps, v.mean(0), label=name)
            ax.fill_between(steps, v.min(0), v.max(0), alpha=0.2)
        ax.set_title(key)
        ax.set_xlabel("step")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    out = os.path.join(root, "curves.png")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def sample_grids(root: str, names: list[str], seed: str, cols: int = 3) -> str | None:
    """WORKDIR/grids.png: the final sample grid of one seed of every variant, `cols` to a row, titled."""
    from PIL import Image, ImageDraw

    found = [(n, os.path.join(root, n, f"seed_{seed}", "samples", "samples_final.png")) for n in names]
    images = [(n, Image.open(p).convert("RGB")) for n, p in found if os.path.exists(p)]
    if not images:
        return None
    w, h, pad = max(i.width for _, i in images), max(i.height for _, i in images), 14
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    sheet = Image.new("RGB", (cols * (w + 4), rows * (h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (name, img) in enumerate(images):
        x, y = (j % cols) * (w + 4), (j // cols) * (h + pad)
        sheet.paste(img, (x, y + pad))
        draw.text((x + 2, y + 1), f"{name} (seed {seed})", fill="black")
    out = os.path.join(root, "grids.png")
    sheet.save(out)
    return out


if __name__ == "__main__":
    define_flags()
    cli.run(main)
