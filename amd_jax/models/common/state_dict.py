"""The one check of a checkpoint against its model: every missing, unexpected and mis-shaped tensor, by name.

`check(got, expected, wording, error=...)` compares the checkpoint's {name: array or shape} with the model's
{name: shape} and raises `error` (the caller's class: ValueError, WeightError, DamagedFileError ...) listing all
of them; it returns quietly when the two match exactly. `compare` + `raise_for` are its two halves, for a caller
that adds its own problems (SiT's pos_embed) only when the shapes match.

A `Wording` holds a caller's message: its header (with the `what` it names), its fix hint and the layout its users
and tests know, either one problem a line (SiT, the diffusers folders, Inception) or one ' | '-separated group per
kind (open_clip, transformers CLIP/ViT, param trees). Loaders that rename tensors on the way (PyTorch -> Flax)
compare in the checkpoint's names: a reached parameter under the name that reached it, an unreached one under
its own label.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

Shape = tuple[int, ...]
# One problem (lines) or one mis-shaped tensor (groups): a str.format template of name, got (the checkpoint's
# shape, None for a tensor refused for another reason) and want (the model's), or a callable of the three.
Item = Union[str, Callable[[Any, Any, Any], str]]
KINDS = ("missing", "unexpected", "misshaped")


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """Names the model needs and the checkpoint lacks (model order), names the model has no place for (checkpoint
    order) and names in both with different shapes (model order)."""

    missing: list
    unexpected: list
    misshaped: list

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.misshaped)


@dataclasses.dataclass(frozen=True)
class Wording:
    """How one loader words a mismatch.

    header: str.format'ed with the caller's fields (`what`, ...) and `count`, the number of problems.
    missing / unexpected / misshaped: lines layout: one problem (an `Item`); groups layout: one group, str.format'ed
    with names (the first `limit` names, a list), more (' ...' when names were left out) and count (misshaped:
    items, its first `limit` tensors written by `item`, '; '-joined).
    order: the kinds in the order they are written; sort: the kinds whose names are sorted.
    limit: lines: problems written (then '... and N more'); groups: names per group.
    footer: appended as is (the fix hint).
    """

    header: str
    missing: Item = "missing tensor: {name}"
    unexpected: Item = "unexpected tensor: {name}"
    misshaped: Item = "shape mismatch: {name}: checkpoint {got}, model {want}"
    order: tuple[str, ...] = KINDS
    sort: tuple[str, ...] = ()
    limit: int | None = None
    groups: bool = False
    item: Item = "{name}: expected {want}, got {got}"
    footer: str = ""


def shape_of(value) -> Shape | None:
    """A tuple (or None) as it is, else the shape of an array, tensor or ShapeDtypeStruct."""
    return value if value is None or isinstance(value, tuple) else tuple(np.shape(value))


def compare(got: Mapping[Any, Any], expected: Mapping[Any, Any]) -> Mismatch:
    """The differences of {name: array or shape} `got` from {name: array or shape} `expected`. A value None in
    `got` marks a tensor the caller refuses for another reason: it is reported with the mis-shaped ones."""
    return Mismatch(missing=[k for k in expected if k not in got],
                    unexpected=[k for k in got if k not in expected],
                    misshaped=[k for k in expected if k in got and shape_of(got[k]) != shape_of(expected[k])])


def _item(template: Item, name, got: Mapping, expected: Mapping) -> str:
    g, w = shape_of(got.get(name)), shape_of(expected.get(name))
    return template(name, g, w) if callable(template) else template.format(name=name, got=g, want=w)


def message(mismatch: Mismatch, got: Mapping, expected: Mapping, wording: Wording, extra: Sequence[str] = (),
            **fields) -> str:
    """The text of `mismatch` (and the caller's `extra` problems) in `wording`; `fields` fill its header."""
    names = {kind: sorted(getattr(mismatch, kind)) if kind in wording.sort else list(getattr(mismatch, kind))
             for kind in KINDS}
    limit = wording.limit
    if wording.groups:
        parts = []
        for kind in wording.order:
            found = names[kind]
            if not found:
                continue
            shown = found[:limit] if limit is not None else found
            if kind == "misshaped":
                items = "; ".join(_item(wording.item, n, got, expected) for n in shown)
                parts.append(wording.misshaped.format(items=items, count=len(found)))
            else:
                parts.append(getattr(wording, kind).format(names=shown, more=" ..." if len(shown) < len(found) else "",
                                                           count=len(found)))
        parts += extra
        return wording.header.format(count=len(parts), **fields) + " | ".join(parts) + wording.footer
    lines = [_item(getattr(wording, kind), n, got, expected) for kind in wording.order for n in names[kind]]
    lines += extra
    shown = lines[:limit] if limit is not None else lines
    text = "".join(f"\n  {line}" for line in shown)
    if len(shown) < len(lines):
        text += f"\n  ... and {len(lines) - len(shown)} more"
    return wording.header.format(count=len(lines), **fields) + text + wording.footer


def raise_for(mismatch: Mismatch, got: Mapping, expected: Mapping, wording: Wording, *,
              error: type[Exception] = ValueError, extra: Sequence[str] = (), **fields) -> None:
    """Raise `error` with the message of `mismatch` and `extra`, if there is any problem."""
    if mismatch or extra:
        raise error(message(mismatch, got, expected, wording, extra, **fields))


def check(got: Mapping, expected: Mapping, wording: Wording, *, error: type[Exception] = ValueError,
          **fields) -> None:
    """Raise `error` naming every missing, unexpected and mis-shaped tensor of `got` ({name: array or shape})
    against `expected` ({name: shape}), worded by `wording` with `fields` (e.g. what=...) in its header."""
    raise_for(compare(got, expected), got, expected, wording, error=error, **fields)
