"""Layers with several inputs: channel concatenation and element-wise addition (which broadcasts)."""
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


_AXES = {3: ("channels", "height", "width"), 1: ("features",)}
_SYMBOL = {"add": "+", "multiply": "*"}


def broadcast(node, ins) -> tuple:
    """The shape of an element-wise op whose inputs broadcast as numpy's do over the per-sample shape
    (CxHxW or N): along each axis every input has the output's size or 1 (squeeze-and-excitation:
    16x32x32 * 16x1x1 -> 16x32x32). An error names the axis and the input that does not fit."""
    names = ", ".join(f"{i}: {fmt_shape(s)}" for i, s in zip(node.inputs, ins))
    expr = f" {_SYMBOL.get(node.kind, ',')} ".join(fmt_shape(s) for s in ins)
    head = f"{node.kind} needs identical shapes or shapes that broadcast: {expr}"
    if len({len(s) for s in ins}) > 1:
        raise SpecError(f"{head}: maps and vectors do not combine", notes=[names], code=node.kind)
    axes = _AXES.get(len(ins[0])) or tuple(f"axis {a + 1}" for a in range(len(ins[0])))
    out = []
    for axis, sizes in zip(axes, zip(*ins)):
        want = next((n for n in sizes if n != 1), 1)  # the first size that is not 1
        for name, n in zip(node.inputs, sizes):
            if n not in (1, want):
                raise SpecError(f"{head}: {axis} {want} vs {n}; each axis must be equal or 1",
                                notes=[names, f"{name}'s {axis} {n} is neither {want} nor 1"], code=node.kind)
        out.append(max(sizes))
    if node.partitioned and any(s[0] != out[0] for s in ins):
        raise SpecError(f"{node.kind} broadcasts over channels inside towers, which is not supported",
                        notes=[names, "broadcast before or after the towers block"],
                        code="towers")
    return tuple(out)


def _add_infer(node, ins):
    return broadcast(node, ins)


register(LayerKind(
    name="concat", doc="Concatenates its inputs along channels.", schema=Schema(), infer=_concat_infer,
    arity=(2, None),
))
register(LayerKind(
    name="add", doc="Element-wise sum (residual connections); inputs of identical shape, or shapes that "
                    "broadcast: along each axis, the same size or 1.",
    schema=Schema(), infer=_add_infer,
    arity=(2, None), aliases=("eltwise",),
))
