"""The plan as text: one row per step, the verdict and knobs of a step that does not fit, the iteration."""

from __future__ import annotations

from amd_jax.plan.figures import GIB, loop_summary
from amd_jax.plan.hlo import KINDS

_MIB = 2**20
_SHORT = {"all-gather": "AG", "reduce-scatter": "RS", "all-reduce": "AR", "all-to-all": "A2A",
          "collective-permute": "CP"}


def text(plan: dict) -> str:
    chip = plan["chip"]
    devices = plan.get("devices", plan["chips"])
    per = (f"{devices} devices = {plan['chips']} chips; figures per device: " if devices != plan["chips"]
           else f"{plan['chips']} x ")
    lines = [f"{plan['config']} ({plan['method']}) on {plan['topology']}: {per}{chip['name']} "
             f"({chip['bf16_tflops']:g} TFLOP/s bf16, {chip['hbm_gib']:g} GiB HBM), mesh {plan['mesh']}, "
             f"global batch {plan['global_batch']} ({plan['global_batch'] / devices:g} per device), "
             f"compiler options {plan['compiler_options'] or 'default'}",
             f"{'step':<13}{'compile s':>10}{'TFLOP/chip':>11}{'jaxpr TF':>9}{'Den. fw':>8}{'GB acc.':>9}{'est. ms':>10}"
             f"{'MFU':>7}{'roof ms':>9}"
             f"{'peak GiB':>10}{'arg':>7}{'temp':>7}  fits  collectives MiB/chip"]
    for name, s in plan["steps"].items():
        jx = s.get("jaxpr", {})
        if "error" in s:
            lines.append(f"{name:<13}  DOES NOT FIT: {s['error']}")
        elif "memory_bytes" not in s:  # traced, not compiled
            lines.append(f"{name:<13}  (not compiled) jaxpr {jx['flops_per_chip'] / 1e12:.3f} TFLOP/chip = "
                         f"{jx['denoiser_forwards']:.2f} student denoiser forwards; traced loops {jx['traced_loops']}, Pallas "
                         f"calls {jx['pallas_calls']}")
        else:
            m, coll = s["memory_bytes"], s["collectives"]
            traffic = " ".join(f"{_SHORT[k]} {coll[k]['bytes'] / _MIB:.1f}" for k in KINDS if coll[k]["ops"])
            mfu = f"{100 * s['mfu']:.1f}%" if s["mfu"] is not None else "-"
            est = f"{1e3 * s['optimal_seconds']:.2f}" if s["optimal_seconds"] > 0 else "none"
            jaxpr = f"{jx['flops_per_chip'] / 1e12:.3f}" if jx else "-"
            fw = f"{jx['denoiser_forwards']:.2f}" if "denoiser_forwards" in jx else "-"
            lines.append(f"{name:<13}{s['compile_s']:>10.1f}{s['flops_per_chip'] / 1e12:>11.3f}{jaxpr:>9}{fw:>8}"
                         f"{s['bytes_accessed_per_chip'] / 1e9:>9.2f}{est:>10}{mfu:>7}{1e3 * s['roofline_seconds']:>9.2f}"
                         f"{m['peak'] / GIB:>10.2f}{m['argument'] / GIB:>7.2f}{m['temp'] / GIB:>7.2f}"
                         f"  {'yes ' if s['fits'] else 'NO  '}  {traffic or '-'}")
        if s.get("while_loops"):
            lines.append(f"{'':<13}  {len(s['while_loops'])} while loops ({loop_summary(s['while_loops'])}): TFLOP, "
                         "est. ms, MFU and collectives count each loop body ONCE (libtpu's cost analysis), a lower "
                         "bound (SDXL: --config.model.unet_scan=False unrolls the UNet's layer stacks; Wan's "
                         "blocks are always scanned)")
        for knob in s.get("knobs", []):
            lines.append(f"{'':<13}  knob: {knob}")
    lines.append("TFLOP/chip: libtpu's count (each loop body once); jaxpr TF: the matmul and convolution FLOPs of the "
                 "step's jaxpr / chips (scans x their length, remat's recomputation included; plan/jaxpr_flops.py); "
                 "Den. fw: jaxpr TF in student denoiser forwards on the step's batch")
    if "iteration" in plan and "error" not in plan["iteration"]:
        lines.append(_iteration(plan["iteration"], plan["chips"]))
    jit = plan.get("jaxpr_iteration", {})
    if "error" not in jit and jit:
        lines.append(f"iteration by the jaxpr: {jit['flops_per_chip'] / 1e12:.3f} TFLOP/chip = "
                     f"{jit['denoiser_forwards']:.2f} student denoiser forwards; {1e3 * jit['seconds_at_peak']:.1f} ms at "
                     "the bf16 peak (100% MFU)")
    return "\n".join(lines)


def _iteration(it: dict, chips: int) -> str:
    if "error" in it:
        return f"iteration: {it['error']}"
    if it["time_source"] == "roofline":
        bad = ", ".join(f"{n} {v:g}" for n, v in it["no_compiler_estimate"].items())
        source = (f"ROOFLINE BOUND (no usable compiler estimate: optimal_seconds {bad}), so the time is a lower "
                  "bound and the MFU an upper bound")
    else:
        source = "compiler estimate, no input/host overhead"
    if it.get("loops_counted_once"):
        source += (f"; LOWER BOUND: loop bodies counted once in {', '.join(it['loops_counted_once'])}")
    return (f"iteration (TTUR {it['ttur']}: 1 generator + {it['ttur'] - 1} sample steps per {it['ttur']} "
            f"iterations, a critic step in each): "
            f"{1e3 * it['seconds']:.1f} ms est., {it['flops_per_chip'] / 1e12:.3f} TFLOP/chip, MFU "
            f"{100 * it['mfu']:.1f}%, {it['images_per_second_per_chip']:.2f} images/s/chip; full run "
            f"{it['total_steps']} iterations ({it['generator_steps']} generator): {it['run_hours']:.3g} h on "
            f"{chips} chips = {it['chip_hours']:.3g} chip-hours ({source})")
