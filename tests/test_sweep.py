"""The experiment driver's bookkeeping: variant parsing, 95% intervals, the results table, curves and grids.

The runs themselves are `python -m amd_jax.train` (tested elsewhere); here synthetic run folders stand in for them.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from amd_jax import sweep, writers


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
    mean, half = sweep.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652729911275 / np.sqrt(3), rel=1e-9)
    assert sweep.interval([5.0]) == (5.0, 0.0)


def _fake_run(root, name, seed, fid, zone):
    wd = root / name / f"seed_{seed}"
    (wd / "samples").mkdir(parents=True)
    (wd / "eval.json").write_text(json.dumps({"fid": fid, "zone_fraction": zone, "method": name, "seed": seed}))
    w = writers.SummaryWriter(str(wd / "tensorboard"), jsonl=str(wd / "metrics.jsonl"))
    for step in (10, 20):
        w.write_scalars(step, {"zone_fraction": zone * step / 20, "sample_eval/fid": fid + 20 - step})
    w.write_scalars(20, {"zone_fraction": zone})  # a resumed run rewrites step 20: the last value wins
    w.close()
    Image.fromarray(np.full((12, 10, 3), 40 * seed, np.uint8)).save(wd / "samples" / "samples_final.png")


def test_results_table_curves_and_grids(tmp_path):
    results = {}
    for name, fids in (("dmd2", (10.0, 12.0, 14.0)), ("amd", (8.0, 8.0, 8.0))):
        for seed, fid in enumerate(fids):
            _fake_run(tmp_path, name, seed, fid, zone=0.1 * (seed + 1))
        results[name] = [json.loads((tmp_path / name / f"seed_{s}" / "eval.json").read_text()) for s in range(3)]
    summary, table = sweep.summarize(results)
    assert summary["dmd2"]["fid"] == pytest.approx((12.0, 4.302652729911275 * 2 / np.sqrt(3)))
    assert summary["amd"]["fid"] == (8.0, 0.0)
    assert table.splitlines()[0] == "| variant | seeds | fid | zone_fraction |"  # 'seed' and 'method' left out
    assert table.splitlines()[2] == "| dmd2 | 3 | 12 ± 5 | 0.2 ± 0.25 |"
    assert sweep.summarize(results, ["zone_fraction", "absent"])[1].splitlines()[0] == "| variant | seeds | zone_fraction |"

    rows = writers.read_jsonl(tmp_path / "dmd2" / "seed_1" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [10, 20]
    assert rows[1]["zone_fraction"] == pytest.approx(0.2) and rows[1]["sample_eval/fid"] == 12.0

    curves = sweep.plot_curves(str(tmp_path), ["dmd2", "amd"], ["0", "1", "2"])
    assert curves and Image.open(curves).size[0] > 400
    grid = Image.open(sweep.sample_grids(str(tmp_path), ["dmd2", "amd", "missing"], "1"))
    assert grid.size == (2 * (10 + 4), 12 + 14)  # two variants found, titled strip on top
    assert np.asarray(grid)[14 + 5, 5, 0] == 40  # seed 1's grid pasted below the title
    assert not os.path.exists(tmp_path / "missing")
    for name in ("c", "d"):
        _fake_run(tmp_path, name, 1, 1.0, 0.1)
    sheet = Image.open(sweep.sample_grids(str(tmp_path), ["dmd2", "amd", "c", "d"], "1"))
    assert sheet.size == (3 * (10 + 4), 2 * (12 + 14))  # 3 to a row
