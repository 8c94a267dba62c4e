"""TPU slice types -> (GKE accelerator, hosts, chips per host, topology, TPU VM runtime).

Cloud TPU names: v4-N and v5p-N count TensorCores (2 per chip), v5litepod-N counts chips (v5e-N is an alias).
Sources: cloud.google.com/tpu/docs/v4, /v5p, /v5e and GKE "Plan TPUs".

Usage: python launch/slices.py SLICE (e.g. v5p-64)
"""

import sys

_RUNTIME = {"v4": "tpu-ubuntu2204-base", "v5p": "v2-alpha-tpuv5", "v5litepod": "v2-alpha-tpuv5-lite"}
_GKE = {"v4": "tpu-v4-podslice", "v5p": "tpu-v5p-slice", "v5litepod": "tpu-v5-lite-podslice"}
_SHAPES = {  # name: (hosts, chips per host, topology)
    "v4-8": (1, 4, "2x2x1"), "v4-16": (2, 4, "2x2x2"), "v4-32": (4, 4, "2x2x4"), "v4-64": (8, 4, "2x4x4"),
    "v4-128": (16, 4, "4x4x4"), "v4-256": (32, 4, "4x4x8"), "v4-512": (64, 4, "4x8x8"),
    "v5p-8": (1, 4, "2x2x1"), "v5p-16": (2, 4, "2x2x2"), "v5p-32": (4, 4, "2x2x4"), "v5p-64": (8, 4, "2x4x4"),
    "v5p-128": (16, 4, "4x4x4"), "v5p-256": (32, 4, "4x4x8"), "v5p-512": (64, 4, "4x8x8"),
    "v5p-1024": (128, 4, "8x8x8"),
    "v5litepod-1": (1, 1, "1x1"), "v5litepod-4": (1, 4, "2x2"), "v5litepod-8": (1, 8, "2x4"),
    "v5litepod-16": (4, 4, "4x4"), "v5litepod-32": (8, 4, "4x8"), "v5litepod-64": (16, 4, "8x8"),
    "v5litepod-128": (32, 4, "8x16"), "v5litepod-256": (64, 4, "16x16"),
}


class UnknownSliceError(ValueError):
    pass


def lookup(name: str) -> dict:
    """Slice facts for a Cloud TPU accelerator type; raises UnknownSliceError listing the known ones."""
    canonical = "v5litepod-" + name[4:] if name.startswith("v5e-") else name
    if canonical not in _SHAPES:
        raise UnknownSliceError(f"unknown TPU slice type {name!r}; known: {', '.join(_SHAPES)} (v5e-N = v5litepod-N). "
                                "Add a row to launch/slices.py for another shape.")
    hosts, chips, topology = _SHAPES[canonical]
    family = canonical.rsplit("-", 1)[0]
    return dict(slice=canonical, gke_accelerator=_GKE[family], hosts=hosts, chips_per_host=chips,
                topology=topology, chips=hosts * chips, runtime=_RUNTIME[family])


def main(argv) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.rstrip() + "\nPrints: slice, GKE accelerator, hosts, chips per host, topology, TPU VM runtime.",
              file=sys.stdout if len(argv) == 2 else sys.stderr)
        return 0 if len(argv) == 2 else 2
    try:
        s = lookup(argv[1])
    except UnknownSliceError as e:
        print(f"slices.py: error: {e}", file=sys.stderr)
        return 2
    print(s["slice"], s["gke_accelerator"], s["hosts"], s["chips_per_host"], s["topology"], s["runtime"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
