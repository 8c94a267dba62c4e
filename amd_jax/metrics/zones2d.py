"""zones2d's held-out metrics: toy2d's (amd_jax/metrics/toy2d.py: precision, recall, mode coverage, SWD, MMD against
the clean data) plus the ground-truth Forbidden-Zone figures, none of which the training sees.

- gt_zone_fraction:  fraction of all samples in the zone (amd_jax/data/zones2d.py `Zone.in_zone`; real data: 0)
- flag_recall:       fraction of the zone's samples that the reward proxy's zone mask flags (1 when none is in it)
- flag_precision:    fraction of the flagged samples that are in the zone (1 when none is flagged)
"""

from __future__ import annotations

import numpy as np

from amd_jax.data.toy2d import Toy2D
from amd_jax.data.zones2d import Zone
from amd_jax.metrics import toy2d


def evaluate(data: Toy2D, zone: Zone, x: np.ndarray, labels: np.ndarray, rewards: np.ndarray, flags=None) -> dict:
    """toy2d's metrics of the samples x, the ground-truth zone fraction and, with the proxy's flags, how well the
    proxy finds the zone."""
    metrics = toy2d.evaluate(data, x, labels, rewards)
    inside = np.asarray(zone.in_zone(data, x, labels))
    metrics["gt_zone_fraction"] = float(np.mean(inside))
    if flags is not None:
        flagged = np.asarray(flags) > 0.5
        metrics["zone_fraction"] = float(np.mean(flagged))
        metrics["flag_recall"] = float(np.mean(flagged[inside])) if inside.any() else 1.0
        metrics["flag_precision"] = float(np.mean(inside[flagged])) if flagged.any() else 1.0
    return metrics
