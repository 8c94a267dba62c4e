"""Are two runs the same, bit for bit? Compares eval.json, the teacher's report and every common checkpoint.

    python -m amd_jax.tools.compare_runs --a=DIR_A --b=DIR_B

Checkpoints are compared through the per-array checksums stored in their meta (amd_jax/checkpoint.py), so nothing
is loaded and the meshes they were written on do not matter. Prints one line per item and exits 1 if anything
differs (0 if all is identical): the check a refactoring or a dependency upgrade must pass.
"""

from __future__ import annotations

import json
import sys

from absl import flags
from etils import epath

from amd_jax import cli, paths

_A = flags.DEFINE_string("a", None, "A run's workdir.")
_B = flags.DEFINE_string("b", None, "Another run's workdir.")
flags.mark_flags_as_required(["a", "b"])


def checkpoint_sums(workdir) -> dict[int, dict[str, str]]:
    """{step: {array path: checksum}} of every checkpoint of a run that stores checksums."""
    out = {}
    folder = epath.Path(workdir) / "checkpoints"
    for step_dir in folder.iterdir() if folder.exists() else ():
        meta = step_dir / "meta" / "metadata"
        if step_dir.name.isdigit() and meta.exists():
            stored = json.loads(meta.read_text()).get("checksum")
            if stored:
                out[int(step_dir.name)] = stored["arrays"]
    return out


def compare(a, b) -> list[tuple[str, bool]]:
    """[(what, identical)] for eval.json, teacher/eval.json and each checkpoint step both runs hold."""
    a, b = epath.Path(a), epath.Path(b)
    rows = []
    for name in ("eval.json", "teacher/eval.json"):
        if (a / name).exists() or (b / name).exists():
            same = (a / name).exists() and (b / name).exists() and (
                json.loads((a / name).read_text()) == json.loads((b / name).read_text()))
            rows.append((name, same))
    sums_a, sums_b = checkpoint_sums(a), checkpoint_sums(b)
    for step in sorted(set(sums_a) | set(sums_b)):
        same = sums_a.get(step) is not None and sums_a.get(step) == sums_b.get(step)
        rows.append((f"checkpoint {step} ({len(sums_a.get(step) or sums_b[step])} arrays)", same))
    return rows


def main(argv):
    del argv
    rows = compare(paths.absolute(_A.value), paths.absolute(_B.value))
    if not rows:
        sys.exit("Nothing to compare: neither run has eval.json or checkpoints with checksums.")
    for what, same in rows:
        print(f"{what}: {'identical' if same else 'DIFFERENT'}")
    identical = all(same for _, same in rows)
    print("all identical" if identical else "the runs differ")
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    cli.run(main)
