"""The TPU chips the plan knows, one table, and the devices of a named topology (compiled for on this host).

Figures per chip, as Google publishes them (cloud.google.com/tpu/docs/<generation>, "System architecture",
checked 2026-12-01): peak bf16 compute, HBM capacity and HBM bandwidth. The pages write the capacity as "GB" (v4: "GiB"); the
chips carry 2^30-byte multiples (a v5p reports ~95.7 GiB usable), so the table takes the figure as GiB.
"""

from __future__ import annotations

import dataclasses
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


CHIPS = {
    "v4": Chip("TPU v4", 275.0, 32.0, 1200.0, "https://cloud.google.com/tpu/docs/v4", tensorcores=2),
    "v5e": Chip("TPU v5e", 197.0, 16.0, 819.0, "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", 459.0, 95.0, 2765.0, "https://cloud.google.com/tpu/docs/v5p", tensorcores=2),
    "v6e": Chip("TPU v6e (Trillium)", 918.0, 32.0, 1640.0, "https://cloud.google.com/tpu/docs/v6e"),
}


def chip(topology: str) -> Chip:
    """The chip of a topology name 'GEN:SHAPE' (e.g. v5p:2x4x4)."""
    gen = topology.split(":", 1)[0].lower()
    if gen not in CHIPS:
        raise ConfigError(f"--topology={topology!r}: unknown TPU generation {gen!r}; use one of {sorted(CHIPS)} "
                          "with a shape, e.g. v5p:2x4x4, v4:2x2x4, v5e:4x4, v6e:4x4.")
    return CHIPS[gen]


def device_share(c: Chip, device) -> tuple[Chip, int]:
    """(the share of `c` one compiled-for device has, devices per chip). libtpu describes v4 topologies with one
    device per TensorCore (`num_cores` 1: v4:2x2x4 is 16 chips, 32 devices of 16 GiB; the compiler's own limit is
    15.25 GiB) and v5p with one per chip (megacore, `num_cores` 2)."""
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
    chip(topology)
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server on a host that is not a TPU VM
    try:
        from jax.experimental import topologies

        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
    except (ImportError, RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot describe TPU topology {topology!r} ({type(e).__name__}: {str(e)[:300]}). "
                          "The plan needs libtpu: pip install -r requirements-tpu.txt (jax[tpu]), in a venv of "
                          "its own; check the shape is one the generation has (e.g. v5p:2x2x1).") from e
