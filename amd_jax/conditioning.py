"""Conditioning computed on the device mesh, where the batch already lives (e.g. token ids -> text embeddings).

A task whose host batch carries cheap inputs (SDXL: the two tokenizers' ids) rather than the conditioning itself
gives a `Condition`: its frozen encoders' parameters and a pure, row-wise `apply(params, cond) -> cond`. The
session wraps it in `MeshCondition`: the parameters are placed on the mesh once (sharded by the same rules as the
other frozen parameters, amd_jax/parallel/sharding.py) and one jitted function maps every sharded cond (training
batches and evaluation conditions) to the cond the steps read, its rows staying on the devices that hold them. It
runs outside the differentiated steps, once per batch, and no array goes back to the host.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable

import jax

from amd_jax.parallel import mesh as mesh_lib
from amd_jax.parallel.sharding import tree_shardings


@dataclasses.dataclass(frozen=True)
class Condition:
    params: Callable[[], Any]  # the frozen encoders' host parameters (loaded on first use)
    apply: Callable[[Any, dict], dict]  # pure, jit-able (params, cond) -> cond; output row i depends on input row i


class MeshCondition:
    """`cond -> cond` on the mesh: `condition.apply` jitted with the batch sharding in and out, its parameters
    placed on the mesh on the first call (thread-safe: the loop's prefetch thread may make that call)."""

    def __init__(self, condition: Condition, mesh, batch_axes: tuple[str, ...], rules=(), min_size: int = 2**14):
        self.condition, self.mesh, self.rules, self.min_size = condition, mesh, tuple(rules), min_size
        self.batch_axes = tuple(batch_axes)
        self._lock = threading.Lock()
        self._params = self._fn = None

    def _load(self):
        """The parameters on the mesh (once) and the jitted function."""
        with self._lock:
            if self._fn is None:
                host = self.condition.params()
                shardings = tree_shardings(host, self.mesh, self.rules, self.min_size)
                self._params = jax.device_put(host, shardings)
                self._fn = jax.jit(self._apply, in_shardings=(shardings, None))
        return self._params, self._fn

    def _apply(self, params, cond):
        return self._on_batch_axes(self.condition.apply(params, self._on_batch_axes(cond)))

    def _on_batch_axes(self, tree):
        """Every leaf's leading (batch) axis split over the mesh's batch axes, as `session.put_batch` places it."""
        rows = lambda a: mesh_lib.batch_sharding(self.mesh, self.batch_axes, a.ndim)
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, rows(a)), tree)

    @property
    def params(self):
        """The parameters as placed on the mesh."""
        return self._load()[0]

    def __call__(self, cond: dict) -> dict:
        params, fn = self._load()
        return fn(params, cond)
