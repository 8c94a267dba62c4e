"""clu's metric writers and periodic actions, importable without TensorFlow: the one place that imports them.

clu 0.0.12's `clu/metric_writers/__init__.py` imports `clu.metric_writers.summary_writer`, whose SummaryWriter is
TensorFlow's summary API; `import clu.metric_writers` (and `clu.periodic_actions`, which imports it) therefore fails
with ModuleNotFoundError when TensorFlow is not installed, although the parts amd_jax uses (the MetricWriter
interface, MultiWriter, AsyncMultiWriter, ReportProgress, Profile) need none of it. amd_jax does not install
TensorFlow (about 1.4 GB); it writes TensorBoard event files with tensorboard's own EventFileWriter
(amd_jax/writers.py TensorBoardWriter). So, when `import tensorflow` fails, a stand-in module is registered as
`clu.metric_writers.summary_writer` before clu is imported; its SummaryWriter raises ImportError saying why, should
anything construct it. With TensorFlow installed, clu is imported unchanged.
"""

from __future__ import annotations

import importlib.util
import sys
import types

_SUMMARY_WRITER = "clu.metric_writers.summary_writer"


class _NoTensorFlowSummaryWriter:
    """What `clu.metric_writers.SummaryWriter` is without TensorFlow: constructing it says why it is absent."""

    def __init__(self, *args, **kwargs):
        raise ImportError("clu.metric_writers.SummaryWriter needs TensorFlow, which amd_jax does not install; "
                          "amd_jax.writers.TensorBoardWriter writes the same event files without it.")


def _stand_in_for_tensorflow_summary_writer() -> None:
    if _SUMMARY_WRITER in sys.modules or importlib.util.find_spec("tensorflow") is not None:
        return
    stand_in = types.ModuleType(_SUMMARY_WRITER, "Stand-in registered by amd_jax.clu_lib: TensorFlow is absent.")
    stand_in.SummaryWriter = _NoTensorFlowSummaryWriter
    sys.modules[_SUMMARY_WRITER] = stand_in


_stand_in_for_tensorflow_summary_writer()

from clu import asynclib, metric_writers, periodic_actions  # noqa: E402  (after the stand-in, on purpose)
from clu.metric_writers import interface  # noqa: E402

MetricWriter = interface.MetricWriter
__all__ = ["MetricWriter", "asynclib", "metric_writers", "periodic_actions"]
