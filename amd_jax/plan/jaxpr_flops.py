"""The matmul and convolution FLOPs of a step, counted on its jaxpr: a check on the compiler's count, which libtpu
takes once per loop body (hlo.while_loops). Here a scan counts `length` times its body and the backward pass of
a rematerialised block includes its recomputed forward, as the program runs.

Counted: `dot_general` (2 x output elements x contracted size) and `conv_general_dilated` (2 x output elements x
kernel window x input features per group), through every sub-jaxpr (jit, remat, custom_vjp, scan, cond: the
costliest branch). Not counted: elementwise work, reductions, and what no jaxpr shows: a while loop with a traced
trip count is counted once and reported (`traced_loops`; the backward simulation's loop runs k < n student steps),
and a Pallas kernel is reported (`pallas_calls`) with the cost it declares, where it declares one. Global FLOPs (the
whole batch); per chip is /chips for a program split evenly.
"""

from __future__ import annotations

import dataclasses
import math

from jax.extend import core as jex_core


@dataclasses.dataclass
class Count:
    flops: float = 0.0
    traced_loops: int = 0
    pallas_calls: int = 0

    def add(self, other: "Count", times: float = 1.0) -> None:
        self.flops += times * other.flops
        self.traced_loops += other.traced_loops
        self.pallas_calls += other.pallas_calls


def count(jaxpr) -> Count:
    """The Count of a (closed) jaxpr."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    out = Count()
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            out.flops += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            out.flops += _conv_flops(eqn)
        elif name == "scan":
            out.add(count(eqn.params["jaxpr"]), eqn.params["length"])
        elif name == "while":
            out.traced_loops += 1
            out.add(count(eqn.params["body_jaxpr"]))
        elif name == "cond":
            branches = [count(b) for b in eqn.params["branches"]]
            out.add(max(branches, key=lambda c: c.flops))
        elif name == "pallas_call":
            out.pallas_calls += 1
            cost = eqn.params.get("cost_estimate")
            out.flops += float(getattr(cost, "flops", 0) or 0)
        elif name == "shard_map":
            inner = count(eqn.params["jaxpr"])
            mesh = eqn.params["mesh"]
            manual = eqn.params.get("manual_axes") or eqn.params.get("axis_names") or mesh.axis_names
            out.add(inner, math.prod(mesh.shape[a] for a in manual))  # the body's shapes are one device's
        else:
            for sub in _sub_jaxprs(eqn.params):
                out.add(count(sub))
    return out


def _sub_jaxprs(params):
    for value in params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, (jex_core.Jaxpr, jex_core.ClosedJaxpr)):
                yield v


def _dot_flops(eqn) -> float:
    (contract_lhs, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract_lhs)


def _conv_flops(eqn) -> float:
    rhs = eqn.invars[1].aval.shape
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, *spatial) as axis indices
    window = math.prod(rhs[i] for i in spec[2:])
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * window * rhs[spec[1]]
