"""Collective traffic and while loops of a compiled program, read from its optimized HLO text (`compiled.as_text()`).

The text is the per-device (SPMD-partitioned) program, so the bytes are per chip. Each collective op counts the
bytes of its OUTPUT shape (a tuple's elements summed): an all-gather's gathered result, a reduce-scatter's
scattered shard, an all-reduce's reduced array. Asynchronous pairs (`all-gather-start` / `all-gather-done`) are
counted once, at their `-done` (whose output is the result). Ops inside a loop body are counted once, as written,
not once per trip: a scanned program moves more than this static count.
"""

from __future__ import annotations

import re

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")

_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
             "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "s4": 0.5, "u4": 0.5}
# `%name = SHAPE opcode(`, the shape possibly a tuple "(f32[2]{0}, f32[8]{0})"
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.+?)\s+([a-z][\w\-]*)\(")
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9]\w*)?)\[([0-9,]*)\]")


def shape_bytes(shape_text: str) -> int:
    """Bytes of an HLO shape: 'bf16[512,256]{1,0:T(8,128)}' or a tuple of them (float8 types count 1 byte)."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(shape_text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _ITEMSIZE.get(dtype, 1 if dtype.startswith("f8") else 0)
    return int(total)


def entry_parameter_bytes(hlo_text: str) -> int:
    """Logical (unpadded) bytes of the entry computation's parameters, per chip: the argument shards the program
    really takes (jit drops unused arguments; memory_analysis's argument bytes also count the TPU layout padding)."""
    m = re.search(r"entry_computation_layout=\{\((.*?)\)->", hlo_text)
    return shape_bytes(m.group(1)) if m else 0


def collective_bytes(hlo_text: str) -> dict:
    """{kind: {'ops': count, 'bytes': output bytes}} for every kind in KINDS (zeros included), per chip."""
    out = {k: {"ops": 0, "bytes": 0} for k in KINDS}
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        shape, opcode = m.groups()
        kind = opcode[: -len("-done")] if opcode.endswith("-done") else opcode
        if kind in out and not opcode.endswith("-start"):
            out[kind]["ops"] += 1
            out[kind]["bytes"] += shape_bytes(shape)
    return out


_WHILE = re.compile(r"\swhile\(.*?condition=%?([\w.\-]+)")
_COMPUTATION = re.compile(r"^%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")
_LT_CONSTANT = re.compile(r"constant\((\d+)\)")


def while_loops(hlo_text: str) -> list[int | None]:
    """The trip count of every while loop in the program, None where it is not a constant (`i < N` with N in the
    condition: scans have one; a fori_loop to a traced bound, as DMD2's backward simulation, has none).

    Why the plan reads them: libtpu's cost analysis counts a loop body once, not once per trip (measured: a
    10-layer matmul stack as a scan 0.0086 TFLOP and 0.031 ms estimated, unrolled 0.0859 and 0.225), so a
    program with loops is costed as a lower bound; `unet_scan=False` unrolls the UNet's layer stacks."""
    bodies, name, lines = {}, None, []
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m:
            name, lines = m.group(1), []
        elif name and line.startswith("}"):
            bodies[name], name = lines, None
        elif name:
            lines.append(line)
    out = []
    for cond in _WHILE.findall(hlo_text):
        body = bodies.get(cond, [])
        consts = [int(c) for line in body for c in _LT_CONSTANT.findall(line)]
        compares_lt = any("compare(" in line and "direction=LT" in line for line in body)
        out.append(consts[0] if compares_lt and len(consts) == 1 else None)
    return out
