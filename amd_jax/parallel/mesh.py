"""The device mesh, built from the config, and the batch sharding over its batch axes (config mesh.batch_axes)."""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec as P

from amd_jax.errors import ConfigError


def resolve_mesh_shape(axes, shape, num_devices: int) -> tuple[int, ...]:
    """Fill one -1 entry of `shape` so the product equals `num_devices`; refuse any mismatch with the fix."""
    sizes_ok = isinstance(shape, (tuple, list)) and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and (s == -1 or s >= 1) for s in shape)
    if not sizes_ok:
        raise ConfigError(f"mesh.shape={shape!r}: give one size per mesh axis, each an integer >= 1 or -1 (at most one "
                          "axis, filled with the remaining devices), e.g. --config.mesh.shape='(-1, 1)'.")
    axes, shape = tuple(axes), [int(s) for s in shape]
    if len(axes) != len(shape):
        raise ConfigError(f"mesh.axes {axes} and mesh.shape {tuple(shape)} differ in length.")
    if shape.count(-1) > 1:
        raise ConfigError(f"mesh.shape {tuple(shape)} has more than one -1; at most one axis can be inferred.")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if known <= 0 or num_devices % known:
            raise ConfigError(
                f"mesh.shape {tuple(shape)} cannot fill {num_devices} devices: the fixed axes multiply to {known}. "
                f"Choose sizes whose product divides {num_devices}."
            )
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ConfigError(
            f"mesh.shape {dict(zip(axes, shape))} needs {math.prod(shape)} devices but {num_devices} are present. "
            f"Set --config.mesh.shape so the sizes multiply to {num_devices} (use -1 for one axis to fill the rest)."
        )
    return tuple(shape)


def make_mesh(axes, shape, devices=None) -> Mesh | AbstractMesh:
    """The config's mesh over `devices` (default: all of this job's); `devices` an int: an AbstractMesh of that many
    devices, which traces (shardings, jaxprs) but cannot compile or run (the TPU plan's --nocompile)."""
    if isinstance(devices, int):
        return AbstractMesh(resolve_mesh_shape(axes, shape, devices), tuple(axes),
                            axis_types=(AxisType.Auto,) * len(axes))
    devices = jax.devices() if devices is None else devices
    shape = resolve_mesh_shape(axes, shape, len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (AssertionError, ValueError, NotImplementedError):
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, tuple(axes), axis_types=(AxisType.Auto,) * len(axes))


def batch_axes(mesh: Mesh, names) -> tuple[str, ...]:
    """The axes of `names` (the config's mesh.batch_axes, e.g. ('data', 'fsdp'): FSDP splits the batch too, as in
    maxdiffusion; a model-parallel axis such as a context axis is left out) that `mesh` has, in that order."""
    return tuple(a for a in names if a in mesh.axis_names)


def batch_sharding(mesh: Mesh, axes: tuple[str, ...], ndim: int = 1) -> NamedSharding:
    """Leading (batch) axis split over the batch `axes` (batch_axes), the rest replicated."""
    return NamedSharding(mesh, P(tuple(axes), *([None] * (ndim - 1))))


def process_rows(mesh: Mesh | None, batch_size: int, axes: tuple[str, ...] = ()) -> np.ndarray:
    """The rows of a global batch that this process's devices hold under `batch_sharding` (all rows with one
    process, or without a mesh): a data pipeline reads and encodes only these."""
    if mesh is None or jax.process_count() == 1:
        return np.arange(batch_size)
    idx = batch_sharding(mesh, axes, 1).addressable_devices_indices_map((batch_size,))
    return np.unique(np.concatenate([np.arange(batch_size)[s] for s in idx.values()]))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
