"""Sharding as rules (big_vision / maxdiffusion style): a parameter's path and shape decide its PartitionSpec.

`rules` is an ordered list of (regex, spec) pairs matched against the '/'-joined path of every leaf; the first
match wins, and spec is a tuple of mesh-axis names (or None) per dimension, or the string 'fsdp'. Leaves that no
rule matches get the default 'fsdp' rule: shard the largest dimension divisible by the fsdp axis size over it,
provided the leaf has at least `fsdp_min_size` elements; otherwise replicate. Optimizer states are sharded by the
same rules (their moments have the parameters' shapes), so they follow the parameters.
"""

from __future__ import annotations

import re

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from amd_jax.errors import ConfigError


def path_str(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def fsdp_spec(shape, mesh: Mesh, axis: str = "fsdp", min_size: int = 2**14) -> P:
    """Shard the largest dimension divisible by mesh[axis]; replicate small or indivisible leaves."""
    n = mesh.shape.get(axis, 1)
    size = 1
    for d in shape:
        size *= d
    if n == 1 or size < min_size:
        return P()
    dims = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in dims:
        if shape[i] % n == 0:
            spec = [None] * len(shape)
            spec[i] = axis
            return P(*spec)
    return P()


def check_rules(rules, axes: tuple[str, ...]) -> None:
    """Refuse `rules` (config sharding.rules) that are not ((regex, spec), ...) with spec 'fsdp' or a tuple with one
    entry per leading dimension: None, a mesh axis of `axes`, or a tuple of them. Whether a dimension divides by its
    axes is known only with the parameters' shapes (`leaf_spec`)."""
    fix = ("give ((regex, spec), ...) pairs, spec 'fsdp' or one entry per dimension (None, a mesh axis, or a tuple of "
           "axes), e.g. --config.sharding.rules=\"(('kernel$', (None, 'fsdp')),)\", or () for the fsdp default")
    if not isinstance(rules, (tuple, list)):
        raise ConfigError(f"sharding.rules={rules!r}: {fix}.")
    for rule in rules:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
            raise ConfigError(f"sharding.rules: the rule {rule!r} is not a (regex, spec) pair: {fix}.")
        regex, spec = rule
        try:
            re.compile(regex)
        except re.error as e:
            raise ConfigError(f"sharding.rules: the rule's regex {regex!r} does not compile ({e}): {fix}.") from None
        if spec == "fsdp":
            continue
        entries = spec if isinstance(spec, (tuple, list)) else None
        ok = entries is not None and all(
            e is None or (isinstance(e, str) and e in axes)
            or (isinstance(e, (tuple, list)) and all(isinstance(a, str) and a in axes for a in e)) for e in entries)
        if not ok:
            raise ConfigError(f"sharding.rules: the rule {regex!r} -> {spec!r} names no valid spec (mesh axes "
                              f"{axes}): {fix}.")


# Scanned layer stacks (models.sdxl.unet_flax with scan_layers=True: `transformer_blocks/`; the Wan transformer:
# `blocks/`; umT5 with scan_layers: `block/`): dim 0 is the layer axis, which must never be sharded (the scan
# slices it per iteration); each layer is sharded as the unscanned leaf would be. SiT's unscanned `blocks_<i>/` and
# the UNets' looped `..._<i>` names do not match.
STACKED_LAYERS = r"(^|/)(transformer_blocks|blocks|block)/"


def leaf_spec(path: str, shape, mesh: Mesh, rules=(), min_size: int = 2**14) -> P:
    """The PartitionSpec of one leaf: the first matching rule, else the fsdp default (stacked layers: per layer)."""
    if len(shape) and re.search(STACKED_LAYERS, path):
        return P(None, *_unstacked_spec(path, tuple(shape)[1:], mesh, rules, min_size))
    return _unstacked_spec(path, shape, mesh, rules, min_size)


def _unstacked_spec(path: str, shape, mesh: Mesh, rules=(), min_size: int = 2**14) -> P:
    for regex, spec in rules:
        if re.search(regex, path):
            if spec == "fsdp":
                return fsdp_spec(shape, mesh, min_size=min_size)
            spec = tuple(spec)
            if len(spec) > len(shape):
                raise ConfigError(f"sharding rule {regex!r} -> {spec} has more dims than {path} {tuple(shape)}.")
            for dim, ax in zip(shape, spec):
                axes = (ax,) if isinstance(ax, str) else (ax or ())
                size = 1
                for a in axes:
                    if a not in mesh.shape:
                        raise ConfigError(f"sharding rule {regex!r} names axis {a!r}, not in the mesh {dict(mesh.shape)}.")
                    size *= mesh.shape[a]
                if dim % size:
                    raise ConfigError(f"sharding rule {regex!r}: {path} dim {dim} is not divisible by {axes} ({size}).")
            return P(*spec)
    return fsdp_spec(shape, mesh, min_size=min_size)


def tree_shardings(abstract_tree, mesh: Mesh, rules=(), min_size: int = 2**14):
    """NamedSharding for every leaf of an (abstract) pytree."""

    def one(path, leaf):
        return NamedSharding(mesh, leaf_spec(path_str(path), getattr(leaf, "shape", ()), mesh, rules, min_size))

    return jax.tree_util.tree_map_with_path(one, abstract_tree)


# Activation sharding as rules (maxdiffusion's logical_axis_rules): a logical activation dimension -> the mesh axes
# that split it. Axes the mesh lacks (or has with size 1) are dropped, so one rule set serves every mesh: a
# data x fsdp mesh splits the batch only, a data x fsdp x context mesh the tokens too (parallel/context.py).
ACTIVATION_RULES = (
    ("batch", ("data", "fsdp")),
    ("tokens", ("context",)),
)


def activation_rules(batch_axes=("data", "fsdp"), tokens_axes=("context",)) -> tuple:
    """ACTIVATION_RULES for the config's mesh.batch_axes (and the axes that split the tokens)."""
    return (("batch", tuple(batch_axes)), ("tokens", tuple(tokens_axes)))


def activation_spec(logical, mesh, rules=ACTIVATION_RULES) -> P:
    """The PartitionSpec of an activation whose dimensions are named `logical` (rule names, or None: replicated)."""
    table = dict(rules)
    entries = []
    for name in logical:
        axes = tuple(a for a in table.get(name, ()) if mesh.shape.get(a, 1) > 1) if name is not None else ()
        entries.append(axes if len(axes) > 1 else axes[0] if axes else None)
    return P(*entries)
