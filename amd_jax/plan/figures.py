"""What the plan reports, from compiled executables: per-step cost, memory and collectives, the fit verdict with
the knobs that would help, and the TTUR-weighted iteration and full run (amd_jax/loop.py's schedule)."""

from __future__ import annotations

import math

from amd_jax.plan import hlo
from amd_jax.plan.chips import Chip

GIB = 2**30
_MEMORY = ("argument", "output", "alias", "temp", "generated_code")


def step_figures(compiled, compile_s: float, chip: Chip) -> dict:
    """One compiled step's figures per chip: compile time, FLOPs, bytes accessed, the compiler's time estimate
    (`optimal_seconds`) and the MFU it implies at the chip's bf16 peak, the roofline bound (the step can be no
    faster than its FLOPs at peak or its bytes at HBM bandwidth; collectives and overlap not counted), memory
    against HBM, collective bytes. A non-positive `optimal_seconds` (seen for sit_xl2 on v5p) is no estimate.
    `while_loops`: the trip counts of the program's loops (hlo.while_loops); with any, the FLOPs, time and
    collectives count each loop body once, a lower bound."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops, seconds = float(cost.get("flops", 0.0)), float(cost.get("optimal_seconds", 0.0))
    accessed = float(cost.get("bytes accessed", 0.0))
    memory = memory_figures(compiled.memory_analysis())
    text = compiled.as_text()
    memory["argument_logical"] = hlo.entry_parameter_bytes(text)
    return {"compile_s": round(compile_s, 2), "flops_per_chip": flops, "while_loops": hlo.while_loops(text),
            "bytes_accessed_per_chip": accessed, "optimal_seconds": seconds,
            "mfu": flops / seconds / (chip.bf16_tflops * 1e12) if seconds > 0 else None,
            "roofline_seconds": roofline_seconds(flops, accessed, chip),
            "memory_bytes": memory, "hbm_bytes": int(chip.hbm_gib * GIB),
            "fits": memory["peak"] <= chip.hbm_gib * GIB, "collectives": hlo.collective_bytes(text)}


def roofline_seconds(flops: float, accessed: float, chip: Chip) -> float:
    """The time below which a step cannot run on one chip: its FLOPs at the bf16 peak or its bytes at the HBM
    bandwidth, whichever takes longer."""
    return max(flops / (chip.bf16_tflops * 1e12), accessed / (chip.hbm_gbps * 1e9))


def memory_figures(stats) -> dict:
    """Per-chip bytes: argument, output, alias, temp, generated code; the peak as argument + output - alias + temp
    and as memory_analysis's own peak_memory_in_bytes (0 where not given). The two disagree on TPU (the reported
    one can be below temp alone), so `peak`, which the fit verdict uses, is the larger."""
    memory = {k: int(getattr(stats, f"{k}_size_in_bytes")) for k in _MEMORY}
    memory["peak_formula"] = memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
    memory["peak_reported"] = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
    memory["peak"] = max(memory["peak_formula"], memory["peak_reported"])
    return memory


def knobs(config, mesh_shape: dict, memory: dict | None, task_knobs=()) -> list[str]:
    """The config knobs that lower a step's per-chip memory, the most useful first for this breakdown (arguments:
    the sharded state and frozen weights; temp: activations). `task_knobs`: the task's own activation knobs
    (amd_jax.tasks.memory_knobs, e.g. SDXL's activation checkpointing)."""
    fsdp = mesh_shape.get("fsdp", 1)
    chips = math.prod(mesh_shape.values())
    per_chip = config.global_batch / chips
    state = (f"shard the state and frozen weights over more chips: a larger fsdp axis (--config.mesh.shape, now "
             f"{tuple(mesh_shape.values())} for {tuple(mesh_shape)}, fsdp={fsdp}) or a lower "
             f"--config.sharding.fsdp_min_size (now {config.sharding.fsdp_min_size})")
    micro = config.train.microbatches
    acts = (f"fewer activations per chip: gradient accumulation over sequential micro-batches, "
            f"--config.train.microbatches (now {micro}; it must divide the {per_chip:g} samples per device) and "
            f"--config.reward.chunks (now {config.reward.chunks}) for the reward's pieces; a lower "
            f"--config.global_batch or more chips for the same batch; --config.model.compute_dtype=bfloat16 "
            f"(now {config.model.get('compute_dtype', '-')}) where the config has it" + "".join(f"; {k}" for k in task_knobs))
    if memory is None or memory["temp"] >= memory["argument"]:
        return [acts, state]
    return [state, acts]


def iteration(steps: dict, config, chips: int, chip: Chip) -> dict:
    """The TTUR-weighted iteration: per `dmd.ttur` iterations one generator step and ttur-1 sample steps, and a
    critic step every iteration (amd_jax/loop.py); the full run counts the exact schedule of total_steps iterations
    from step 0. Timed by the compiler's estimates (`time_source` 'compiler') when every step has a positive one,
    else by the steps' roofline bounds ('roofline': a lower bound on time, so the MFU is an upper bound)."""
    need = ("generator", "sample", "critic")
    missing = [n for n in need if n not in steps or "flops_per_chip" not in steps[n]]
    if missing:
        return {"error": f"needs the compiled {', '.join(missing)} step(s): planned with --steps including them"}
    no_estimate = {n: steps[n]["optimal_seconds"] for n in need if not steps[n]["optimal_seconds"] > 0}
    source = "roofline" if no_estimate else "compiler"
    ttur, total = int(config.dmd.ttur), int(config.total_steps)
    t = {n: steps[n]["roofline_seconds" if no_estimate else "optimal_seconds"] for n in need}
    f = {n: steps[n]["flops_per_chip"] for n in need}
    per_iter = lambda v: per_iteration(v, ttur)
    n_gen = -(-total // ttur)
    run_s = n_gen * t["generator"] + (total - n_gen) * t["sample"] + total * t["critic"]
    seconds, flops = per_iter(t), per_iter(f)
    out = {"ttur": ttur, "time_source": source, "seconds": seconds, "flops_per_chip": flops,
           "mfu": flops / seconds / (chip.bf16_tflops * 1e12),
           "images_per_second_per_chip": config.global_batch / seconds / chips, "total_steps": total,
           "generator_steps": n_gen, "run_hours": run_s / 3600, "chip_hours": run_s * chips / 3600}
    if no_estimate:
        out["no_compiler_estimate"] = no_estimate
    loops = {n: len(steps[n]["while_loops"]) for n in need if steps[n].get("while_loops")}
    if loops:
        out["loops_counted_once"] = loops
    return out


def jaxpr_iteration(steps: dict, config, chip: Chip) -> dict:
    """The TTUR-weighted iteration by the steps' jaxpr FLOPs (every scan trip counted): TFLOP per chip, in student
    denoiser forwards, and the time it would take at the chip's bf16 peak (100% MFU: a lower bound on time)."""
    need = ("generator", "sample", "critic")
    if any(n not in steps or "jaxpr" not in steps[n] for n in need):
        return {"error": "needs the generator, sample and critic steps"}
    ttur = int(config.dmd.ttur)
    per_iter = lambda k: per_iteration({n: steps[n]["jaxpr"][k] for n in need}, ttur)
    flops = per_iter("flops_per_chip")
    return {"flops_per_chip": flops, "denoiser_forwards": per_iter("denoiser_forwards"),
            "seconds_at_peak": flops / (chip.bf16_tflops * 1e12)}


def per_iteration(per_step: dict, ttur: int) -> float:
    """A per-step value (time, FLOPs) per iteration of amd_jax/loop.py's schedule: one generator step and ttur - 1
    sample steps per ttur iterations, a critic step in each."""
    return (per_step["generator"] + (ttur - 1) * per_step["sample"]) / ttur + per_step["critic"]


def loop_summary(trips: list) -> str:
    """'10 trips x 12, traced x 1': how many loops have each trip count ('traced': not a constant)."""
    counts = {}
    for n in trips:
        counts[n] = counts.get(n, 0) + 1
    known = sorted((n, c) for n, c in counts.items() if n is not None)
    parts = [f"{n} trips x {c}" for n, c in known] + ([f"traced x {counts[None]}"] if None in counts else [])
    return ", ".join(parts)
