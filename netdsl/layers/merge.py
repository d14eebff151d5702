"""Layers with several inputs: channel concatenation and element-wise addition."""
from __future__ import annotations

from ..errors import SpecError
from .schema import Schema
from . import LayerKind, fmt_shape, register


def _concat_infer(node, ins):
    ranks = {len(s) for s in ins}
    if len(ranks) > 1:
        raise SpecError("cannot concatenate maps and vectors: "
                        + ", ".join(f"{i} {fmt_shape(s)}" for i, s in zip(node.inputs, ins)), code="concat")
    rest = {tuple(s[1:]) for s in ins}
    if len(rest) > 1:
        raise SpecError("inputs differ in height/width; concat joins channels and needs every other axis equal",
                        notes=[", ".join(f"{i}: {fmt_shape(s)}" for i, s in zip(node.inputs, ins))], code="concat")
    return (sum(s[0] for s in ins), *ins[0][1:])


def _add_infer(node, ins):
    if len({tuple(s) for s in ins}) > 1:
        raise SpecError("add needs identical shapes",
                        notes=[", ".join(f"{i}: {fmt_shape(s)}" for i, s in zip(node.inputs, ins))], code="add")
    return tuple(ins[0])


register(LayerKind(
    name="concat", doc="Concatenates its inputs along channels.", schema=Schema(), infer=_concat_infer,
    arity=(2, None),
))
register(LayerKind(
    name="add", doc="Element-wise sum of inputs of identical shape (residual connections).",
    schema=Schema(), infer=_add_infer,
    arity=(2, None), aliases=("eltwise",),
))
