"""The experiment driver's bookkeeping: variant parsing, 95% intervals, the results table, curves and grids.

The runs themselves are `python -m amd_jax.train` (tested elsewhere); here synthetic run folders stand in for them.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from amd_jax import sweep, sweep_analysis, writers


def test_parse_variant_keeps_tuple_values_whole():
    assert sweep.parse_variant("a:method=amd,student.timesteps=(1.0,0.5),amd.s=0.25") == (
        "a", ["method=amd", "student.timesteps=(1.0,0.5)", "amd.s=0.25"])
    assert sweep.parse_variant("plain:") == ("plain", [])
    with pytest.raises(ValueError, match="NAME:key=value"):
        sweep.parse_variant("bad:method")
    for text in sum(sweep.VARIANT_SETS.values(), []):
        name, pairs = sweep.parse_variant(text)
        assert name and all("=" in kv for kv in pairs)


def test_interval_is_the_student_t_half_width():
    # [1, 2, 3]: mean 2, sample std 1, t(0.975, df=2) = 4.302652729911275 (printed tables), n = 3
    mean, half = sweep_analysis.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652729911275 / np.sqrt(3), rel=1e-9)
    assert sweep_analysis.interval([5.0]) == (5.0, 0.0)


def _fake_run(root, name, seed, fid, zone):
    wd = root / name / f"seed_{seed}"
    (wd / "samples").mkdir(parents=True)
    (wd / "eval.json").write_text(json.dumps({"fid": fid, "zone_fraction": zone, "method": name, "seed": seed}))
    w = writers.create_writer(wd, enabled=True)
    for step in (10, 20):
        w.write_scalars(step, {"train/zone_fraction": zone * step / 20, "eval/samples/fid": fid + 20 - step})
    w.write_scalars(20, {"train/zone_fraction": zone})  # a resumed run rewrites step 20: the last value wins
    w.close()
    Image.fromarray(np.full((12, 10, 3), 40 * seed, np.uint8)).save(wd / "samples" / "samples_final.png")


def test_results_table_curves_and_grids(tmp_path):
    results = {}
    for name, fids in (("dmd2", (10.0, 12.0, 14.0)), ("amd", (8.0, 8.0, 8.0))):
        for seed, fid in enumerate(fids):
            _fake_run(tmp_path, name, seed, fid, zone=0.1 * (seed + 1))
        results[name] = [json.loads((tmp_path / name / f"seed_{s}" / "eval.json").read_text()) for s in range(3)]
    summary, table = sweep_analysis.summarize(results)
    assert summary["dmd2"]["fid"] == pytest.approx((12.0, 4.302652729911275 * 2 / np.sqrt(3)))
    assert summary["amd"]["fid"] == (8.0, 0.0)
    assert table.splitlines()[0] == "| variant | seeds | fid | zone_fraction |"  # 'seed' and 'method' left out
    assert table.splitlines()[2] == "| dmd2 | 3 | 12 ± 5 | 0.2 ± 0.25 |"
    assert sweep_analysis.summarize(results, ["zone_fraction", "absent"])[1].splitlines()[0] == "| variant | seeds | zone_fraction |"
    results["ema"] = [{"seed": 0, "fid": 9.0, "ema_fid": 7.0}]  # a metric only one variant reports
    summary, table = sweep_analysis.summarize(results, ["fid", "ema_fid"])
    assert "ema_fid" not in summary["dmd2"] and summary["ema"]["ema_fid"] == (7.0, 0.0)
    assert table.splitlines()[2] == "| dmd2 | 3 | 12 ± 5 |  |" and table.splitlines()[4] == "| ema | 1 | 9 ± 0 | 7 ± 0 |"
    del results["ema"]

    rows = writers.read_jsonl(tmp_path / "dmd2" / "seed_1" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [10, 20]
    assert rows[1]["train/zone_fraction"] == pytest.approx(0.2) and rows[1]["eval/samples/fid"] == 12.0

    curves = sweep_analysis.plot_curves(str(tmp_path), ["dmd2", "amd"], ["0", "1", "2"])
    assert curves and Image.open(curves).size[0] > 400
    grid = Image.open(sweep_analysis.sample_grids(str(tmp_path), ["dmd2", "amd", "missing"], "1"))
    assert grid.size == (2 * (10 + 4), 12 + 14)  # two variants found, titled strip on top
    assert np.asarray(grid)[14 + 5, 5, 0] == 40  # seed 1's grid pasted below the title
    assert not os.path.exists(tmp_path / "missing")
    for name in ("c", "d"):
        _fake_run(tmp_path, name, 1, 1.0, 0.1)
    sheet = Image.open(sweep_analysis.sample_grids(str(tmp_path), ["dmd2", "amd", "c", "d"], "1"))
    assert sheet.size == (3 * (10 + 4), 2 * (12 + 14))  # 3 to a row


def _eval_run(root, name, seed, metrics, curve=None):
    wd = root / name / f"seed_{seed}"
    wd.mkdir(parents=True)
    (wd / "eval.json").write_text(json.dumps({**metrics, "method": name, "seed": seed, "step": 30}))
    if curve is not None:
        w = writers.create_writer(wd, enabled=True)
        for step, v in curve:
            w.write_scalars(step, {"eval/samples/gt_zone_fraction": v})
        w.close()


def _hand_interval(diffs):
    """mean and half-width of the 95% Student-t interval, written out with scipy.stats.t."""
    from scipy import stats

    d = np.asarray(diffs, np.float64)
    return d.mean(), stats.t.ppf(0.975, len(d) - 1) * np.sqrt(np.sum((d - d.mean()) ** 2) / (len(d) - 1)) / np.sqrt(
        len(d))


def test_paired_differences_against_a_hand_computation(tmp_path):
    """Made-up eval.json files: amd lacks seed 3 and lists its seeds in another order (pairs are by seed); 'fid'
    differs consistently (resolved), 'precision' by noise around 0 (not resolved); 'only_amd' has no baseline."""
    base = {0: (10.0, 0.50), 1: (12.0, 0.70), 2: (11.0, 0.40), 3: (30.0, 0.90)}
    amd = {2: (9.6, 0.43), 0: (9.1, 0.45), 1: (11.2, 0.74)}
    for seed, (fid, prec) in base.items():
        _eval_run(tmp_path, "dmd2", seed, {"fid": fid, "precision": prec})
    for seed, (fid, prec) in amd.items():
        _eval_run(tmp_path, "amd", seed, {"fid": fid, "precision": prec, "only_amd": 1.0})
    results = {n: [sweep_analysis.load_run(str(tmp_path / n / f"seed_{s}")) for s in seeds]
               for n, seeds in (("dmd2", (0, 1, 2, 3)), ("amd", (2, 0, 1)))}
    diffs = sweep_analysis.paired(results, "dmd2")
    assert set(diffs) == {"amd"} and set(diffs["amd"]) == {"fid", "precision"}
    for metric, col in (("fid", 0), ("precision", 1)):
        mean, half = _hand_interval([amd[s][col] - base[s][col] for s in (0, 1, 2)])
        got = diffs["amd"][metric]
        assert got["n"] == 3
        assert got["mean"] == pytest.approx(mean, rel=1e-12) and got["half_width"] == pytest.approx(half, rel=1e-12)
        assert got["resolved"] == (abs(mean) > half)
    assert diffs["amd"]["fid"]["resolved"] and not diffs["amd"]["precision"]["resolved"]
    # fid: diffs -0.9, -0.8, -1.4: mean -1.03333, sd sqrt(0.20667 / 2) = 0.321455, half 4.302653 * sd / sqrt(3)
    assert diffs["amd"]["fid"]["mean"] == pytest.approx(-1.0333333, abs=1e-6)
    assert diffs["amd"]["fid"]["half_width"] == pytest.approx(0.798539, abs=1e-5)
    table = sweep_analysis.paired_table(diffs, "dmd2")
    assert "| amd | -1.03 ± 0.8 (3) * | " in table and "(3) |" in table.splitlines()[-1]


def test_paired_single_seed_is_never_resolved():
    results = {"dmd2": [{"seed": 0, "fid": 10.0}], "amd": [{"seed": 0, "fid": 5.0}]}
    got = sweep_analysis.paired(results, "dmd2")["amd"]["fid"]
    assert got == {"mean": -5.0, "half_width": 0.0, "n": 1, "resolved": False}


def test_escape_step_is_where_the_zone_fraction_stays_below_the_threshold(tmp_path):
    threshold = sweep_analysis.ESCAPE["eval/samples/gt_zone_fraction"]
    lo, hi = threshold / 2, threshold * 3
    cases = {
        "late": ([(10, hi), (20, lo), (30, hi), (40, lo), (50, lo)], {"escaped": 1.0, "escape_step": 40}),
        "never": ([(10, lo), (20, lo), (30, hi)], {"escaped": 0.0}),
        "always": ([(10, lo), (20, lo)], {"escaped": 1.0, "escape_step": 10}),
    }
    for name, (curve, want) in cases.items():
        _eval_run(tmp_path, name, 0, {"fid": 1.0}, curve)
        got = sweep_analysis.load_run(str(tmp_path / name / "seed_0"))
        assert {k: got[k] for k in ("escaped", "escape_step") if k in got} == want, name
    _eval_run(tmp_path, "no_curve", 0, {"fid": 1.0})
    assert "escaped" not in sweep_analysis.load_run(str(tmp_path / "no_curve" / "seed_0"))


def test_report_only_writes_the_paired_table(tmp_path):
    """The command line: --report_only tabulates finished runs, with the paired table against --baseline."""
    import subprocess
    import sys

    for seed, (a, b) in enumerate(((1.0, 2.0), (2.0, 3.5), (3.0, 4.0))):
        _eval_run(tmp_path, "base", seed, {"m": a})
        _eval_run(tmp_path, "other", seed, {"m": b})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "amd_jax.sweep", f"--config={root}/configs/toy2d_tiny.py", f"--workdir={tmp_path}",
           "--seeds=0,1,2", "--variant=base:method=dmd2", "--variant=other:method=amd", "--baseline=base",
           "--report_only"]
    subprocess.run(cmd, check=True, cwd=root, capture_output=True, env={**os.environ, "PYTHONPATH": root})
    saved = json.loads((tmp_path / "results.json").read_text())
    mean, half = _hand_interval([1.0, 1.5, 1.0])
    assert saved["baseline"] == "base"
    assert saved["paired"]["other"]["m"]["mean"] == pytest.approx(mean)
    assert saved["paired"]["other"]["m"]["half_width"] == pytest.approx(half)
    assert saved["paired"]["other"]["m"]["resolved"] is True
    assert "variant - base, same seed" in (tmp_path / "results.md").read_text()
