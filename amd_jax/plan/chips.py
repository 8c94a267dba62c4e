"""The TPU chips the plan knows, one table, and the devices of a named topology: libtpu's (compiled for on this
host) or, for tracing only, just their count from the topology's shape and the table (no libtpu).

Figures per chip, as Google publishes them (cloud.google.com/tpu/docs/<generation>, "System architecture",
checked 2026-12-01): peak bf16 compute, HBM capacity and HBM bandwidth. The pages write the capacity as "GB" (v4: "GiB"); the
chips carry 2^30-byte multiples (a v5p reports ~95.7 GiB usable), so the table takes the figure as GiB.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os

from amd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    bf16_tflops: float  # peak dense bf16 TFLOP/s per chip
    hbm_gib: float  # HBM per chip
    hbm_gbps: float  # HBM bandwidth per chip, GB/s
    source: str
    tensorcores: int = 1  # per chip
    devices_per_chip: int = 1  # JAX devices per chip in libtpu's topology description (v4: one per TensorCore)
    dims: int = 3  # the topology shape's dimensions (v4, v5p: a 3-D torus AxBxC; v5e, v6e: a 2-D AxB)


CHIPS = {
    "v4": Chip("TPU v4", 275.0, 32.0, 1200.0, "https://cloud.google.com/tpu/docs/v4", tensorcores=2,
                devices_per_chip=2),
    "v5e": Chip("TPU v5e", 197.0, 16.0, 819.0, "https://cloud.google.com/tpu/docs/v5e", dims=2),
    "v5p": Chip("TPU v5p", 459.0, 95.0, 2765.0, "https://cloud.google.com/tpu/docs/v5p", tensorcores=2),
    "v6e": Chip("TPU v6e (Trillium)", 918.0, 32.0, 1640.0, "https://cloud.google.com/tpu/docs/v6e", dims=2),
}


def chip(topology: str) -> Chip:
    """The chip of a topology name 'GEN:SHAPE' (e.g. v5p:2x4x4)."""
    gen = topology.split(":", 1)[0].lower()
    if gen not in CHIPS:
        raise ConfigError(f"--topology={topology!r}: unknown TPU generation {gen!r}; use one of {sorted(CHIPS)} "
                          "with a shape, e.g. v5p:2x4x4, v4:2x2x4, v5e:4x4, v6e:4x4.")
    return CHIPS[gen]


def topology_chips(topology: str) -> int:
    """The chips of a topology name 'GEN:SHAPE' (v5p:2x4x4 -> 32, v5e:4x4 -> 16), from its shape alone."""
    c = chip(topology)
    shape = topology.split(":", 1)[1] if ":" in topology else ""
    dims = shape.lower().split("x")
    if len(dims) != c.dims or not all(d.isdigit() and int(d) >= 1 for d in dims):
        gen = topology.split(":", 1)[0].lower()
        example = " or ".join(f"{gen}:{s}" for s in (("2x2x1", "2x4x4") if c.dims == 3 else ("2x2", "4x4")))
        raise ConfigError(f"--topology={topology!r}: a {c.name} topology is GEN:SHAPE with {c.dims} sizes >= 1, "
                          f"e.g. {example}.")
    return math.prod(int(d) for d in dims)


def topology_device_count(topology: str) -> int:
    """The JAX devices of `topology` as libtpu describes it (chips x the table's devices per chip: v4:2x2x4 is 16
    chips, 32 devices); what the traced-only plan builds its AbstractMesh of."""
    return topology_chips(topology) * chip(topology).devices_per_chip


def device_share(c: Chip, device=None) -> tuple[Chip, int]:
    """(the share of `c` one compiled-for device has, devices per chip). libtpu describes v4 topologies with one
    device per TensorCore (`num_cores` 1: v4:2x2x4 is 16 chips, 32 devices of 16 GiB; the compiler's own limit is
    15.25 GiB) and v5p with one per chip (megacore, `num_cores` 2). `device` None (no libtpu, tracing only): the
    table's devices_per_chip."""
    if device is None:
        per_chip = c.devices_per_chip
    else:
        cores = getattr(device, "num_cores", None) or c.tensorcores
        per_chip = max(1, c.tensorcores // cores)
    if per_chip == 1:
        return c, 1
    share = dataclasses.replace(c, name=f"{c.name} TensorCore (1/{per_chip} chip)", bf16_tflops=c.bf16_tflops /
                                per_chip, hbm_gib=c.hbm_gib / per_chip, hbm_gbps=c.hbm_gbps / per_chip)
    return share, per_chip


def topology_devices(topology: str) -> list:
    """The TPU devices of `topology` (e.g. v5p:2x2x1 -> 4 devices), from libtpu's topology description: no TPU is
    needed, nothing can run on them, XLA compiles for them."""
    topology_chips(topology)  # a malformed name is refused here, whatever libtpu would say
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server on a host that is not a TPU VM
    if importlib.util.find_spec("libtpu") is None:
        raise ConfigError(f"compiling for {topology} needs libtpu (the TPU compiler), not installed in this Python: "
                          "pip install -r requirements-tpu.txt in a venv of its own, or add --nocompile (tracing "
                          "only: the jaxpr FLOPs, no libtpu).")
    try:
        from jax.experimental import topologies

        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
    except (ImportError, RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot describe TPU topology {topology!r} ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:300]}); check the shape is one the generation has (e.g. "
                          "v5p:2x2x1) and that libtpu matches jax (requirements-tpu.txt).") from e
