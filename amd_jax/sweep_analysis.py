"""What a sweep's runs say (amd_jax/sweep.py runs them): per variant and metric the mean and 95% Student-t interval
over seeds, the paired comparison against a baseline, escape metrics from the in-training curves, and the figures
(curves.png, grids.png)."""

from __future__ import annotations

import json
import os

import numpy as np
from scipy import stats

# curve key -> threshold: a run has escaped from the step on which the curve stays below the threshold to its end
# (zones2d's ground-truth zone fraction; the clean data's is 0)
# (names as amd_jax/loop.py and amd_jax/evaluators.py write them: train/<step metric>, eval/samples/<metric>)
ESCAPE = {"eval/samples/gt_zone_fraction": 0.01}
CURVES = ("train/zone_fraction", "eval/samples/gt_zone_fraction", "train/gt_zone/xf_minus_x",
          "train/gt_zone/cfg_minus_xf", "train/reward_mean", "eval/samples/fid", "eval/samples/class_accuracy",
          "train/loss_fake")


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

