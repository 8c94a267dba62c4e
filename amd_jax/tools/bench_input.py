"""Host cost of the SDXL prompt input at scale: today's whole-file reader against caption records.

    python -m amd_jax.tools.bench_input --dir=/tmp/bench_input [--rows=1000000] [--width=512] [--batch=64] \\
        [--processes=4] [--steps=300] [--compute_ms=0,20]

Makes (once, kept in --dir) a synthetic set of --rows captions, each with one float16 embedding of --width values
(--width=512: 1 KiB a row, 1 GB for a million rows; SDXL's real 77x2048 bf16 prompt embeddings would be 315 KB a
row, 315 GB, more than this disk holds), as today's inputs (captions.txt + embeddings.safetensors) and as caption
records converted from them (amd_jax.tools.convert_inputs). Then, each in a fresh process, so that its peak RSS is
its own, it times PromptSource.global_batch as process 0 of --processes (reading its --batch / --processes rows of
each global batch) over --steps consecutive steps, for:
    before    data.path=captions.txt + data.embeddings=embeddings.safetensors (read whole on every host)
    after     data.path=records folder (read by index, the next 4 steps prefetched by 2 grain threads)
--compute_ms: simulated device time between batches (a sleep); prefetch only helps when there is some.
Prints per variant: open s (building the source, imports excluded) and the RSS it added, host ms per batch (mean, p50, p95 of the time the caller is
blocked in global_batch), peak RSS MiB (VmHWM). The files stay in the page cache after they are written, so
these are warm-cache figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import flags

from amd_jax import cli

_DIR = flags.DEFINE_string("dir", "/tmp/bench_input", "Folder of the synthetic inputs (made once, then reused).")
_ROWS = flags.DEFINE_integer("rows", 1_000_000, "Captions.")
_WIDTH = flags.DEFINE_integer("width", 512, "float16 values of each caption's embedding.")
_BATCH = flags.DEFINE_integer("batch", 64, "Global batch.")
_PROCESSES = flags.DEFINE_integer("processes", 4, "Processes the batch is split over (this one is process 0).")
_STEPS = flags.DEFINE_integer("steps", 300, "Steps timed.")
_COMPUTE = flags.DEFINE_list("compute_ms", ["0", "20"], "Simulated device ms between batches (a sleep), each timed.")
_VARIANT = flags.DEFINE_string("variant", "", "Internal: time one variant in this process ('before' / 'after').")

PREFETCH = (2, 4)  # the tasks' reading records (amd_jax/data/records.py: PREFETCH)


def make_inputs(folder: str, rows: int, width: int) -> None:
    """captions.txt, embeddings.safetensors (prompt_embeds [rows, width] float16) and records/ (converted)."""
    import numpy as np
    import safetensors.numpy

    from amd_jax.tools import convert_inputs

    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(os.path.join(folder, "records")):
        words = np.asarray("a photo of red blue cat dog on the beach at night in snow with hat".split())
        rng = np.random.default_rng(0)
        with open(os.path.join(folder, "captions.txt"), "w") as f:
            for start in range(0, rows, 100_000):
                n = min(100_000, rows - start)
                picks = words[rng.integers(0, len(words), (n, 10))]
                f.write("".join(f"{i + start} " + " ".join(w) + "\n" for i, w in enumerate(picks)))
        emb = np.empty((rows, width), np.float16)
        for start in range(0, rows, 100_000):
            emb[start:start + 100_000] = rng.standard_normal((min(100_000, rows - start), width))
        safetensors.numpy.save_file({"prompt_embeds": emb}, os.path.join(folder, "embeddings.safetensors"))
        del emb
        t0 = time.perf_counter()
        convert_inputs.convert(os.path.join(folder, "captions.txt"), os.path.join(folder, "records.tmp"),
                               embeddings=os.path.join(folder, "embeddings.safetensors"))
        os.replace(os.path.join(folder, "records.tmp"), os.path.join(folder, "records"))
        print(f"converted {rows} captions to records in {time.perf_counter() - t0:.1f} s")
    sizes = {name: _size(os.path.join(folder, name)) for name in ("captions.txt", "embeddings.safetensors",
                                                                  "records")}
    print("inputs: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in sizes.items()))


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
    return os.path.getsize(path)


def time_variant(variant: str, folder: str, batch: int, processes: int, steps: int, compute_ms: list[float]):
    """{open_s, per compute_ms: [mean, p50, p95] host ms per batch, peak_rss_mib} of one variant, in this process."""
    import grain  # noqa: F401  (imported before the clock starts: open_s is the reading, not the imports)
    import numpy as np

    from amd_jax import tensor_files
    from amd_jax.data import prompts as P
    from amd_jax.data import records

    local = np.arange(batch // processes)  # process 0's rows of the global batch
    base_rss = _rss_mib()
    t0 = time.perf_counter()
    if variant == "before":
        embeddings = dict(tensor_files.read(os.path.join(folder, "embeddings.safetensors")))
        source = P.PromptSource(P.read_captions(os.path.join(folder, "captions.txt")), 0, embeddings=embeddings,
                                local_rows=lambda b: local)
    else:
        source = P.PromptSource(records.Records(os.path.join(folder, "records")), 0, local_rows=lambda b: local,
                                prefetch=PREFETCH)
    out = {"open_s": time.perf_counter() - t0, "open_rss_mib": _rss_mib() - base_rss, "base_rss_mib": base_rss,
           "ms": {}}
    for c, compute in enumerate(compute_ms):
        first = c * 10 * steps  # fresh rows for each setting (a jump: the prefetch restarts there)
        source.global_batch(first, batch)
        blocked = []
        for step in range(first + 1, first + 1 + steps):
            time.sleep(compute / 1000)
            t = time.perf_counter()
            source.global_batch(step, batch)
            blocked.append((time.perf_counter() - t) * 1000)
        out["ms"][str(compute)] = [float(np.mean(blocked)), float(np.percentile(blocked, 50)),
                                   float(np.percentile(blocked, 95))]
    out["peak_rss_mib"] = _status_mib("VmHWM")
    return out


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def _status_mib(key: str) -> float:
    """VmRSS (resident now) or VmHWM (peak) of this process, from Linux /proc/self/status. Not getrusage's
    ru_maxrss: that survives execve, so a child would report its parent's peak (the input maker's)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


def main(argv):
    del argv
    folder, compute = _DIR.value, [float(c) for c in _COMPUTE.value]
    if _VARIANT.value:
        print(json.dumps(time_variant(_VARIANT.value, folder, _BATCH.value, _PROCESSES.value, _STEPS.value,
                                      compute)))
        return
    make_inputs(folder, _ROWS.value, _WIDTH.value)
    print(f"{_ROWS.value} captions, {_WIDTH.value} float16 values each; global batch {_BATCH.value}, process 0 of "
          f"{_PROCESSES.value} ({_BATCH.value // _PROCESSES.value} rows); {_STEPS.value} steps")
    for variant in ("before", "after"):
        cmd = [sys.executable, "-m", "amd_jax.tools.bench_input", f"--variant={variant}", f"--dir={folder}",
               f"--batch={_BATCH.value}", f"--processes={_PROCESSES.value}", f"--steps={_STEPS.value}",
               f"--compute_ms={','.join(_COMPUTE.value)}"]
        res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        if res.returncode:
            sys.exit(f"{variant} failed: {res.stderr.strip().splitlines()[-1]}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        ms = "; ".join(f"compute {c} ms: host ms/batch mean {m[0]:.2f} p50 {m[1]:.2f} p95 {m[2]:.2f}"
                       for c, m in r["ms"].items())
        print(f"{variant:6s} open {r['open_s']:.2f} s, RSS +{r['open_rss_mib']:.0f} MiB over {r['base_rss_mib']:.0f} "
              f"MiB after imports; {ms}; peak RSS {r['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    cli.run(main)
