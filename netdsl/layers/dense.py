"""Fully connected layers and flatten. fc flattens everything after the batch axis itself."""
from __future__ import annotations

from ..errors import SpecError
from .schema import BoolType, InitType, IntType, Param, REQUIRED, Schema
from . import Cost, LayerKind, explain_groups, fmt_shape, groups, numel, register


def _fc_infer(node, ins):
    n, out, g = numel(ins[0]), node.params["out"], groups(node)
    for what, size in (("input features", n), ("output features", out)):
        if size % g:
            raise SpecError(f"{size} {what} do not divide into {explain_groups(node)}",
                            notes=[f"{node.name}: {fmt_shape(ins[0]) if what[0] == 'i' else size} -> "
                                   f"{size} / {g} = {size / g:.4g}"], code="groups")
    return (out,)


def _fc_cost(node, ins, out):
    macs = numel(ins[0]) * out[0] // groups(node)
    return Cost(macs + (out[0] if node.params["bias"] else 0), macs)


register(LayerKind(
    name="fc",
    doc="Fully connected (inner product); flattens its input. `out` counts features over all towers.",
    schema=Schema([
        Param("out", IntType(), REQUIRED, "output features"),
        Param("bias", BoolType(), True),
        Param("groups", IntType(), 1),
        Param("weight_init", InitType(), {"fn": "default"}),
        Param("bias_init", InitType(), {"fn": "default"}),
    ], positional=("out",)),
    infer=_fc_infer, cost=_fc_cost, receptive_field=lambda node: "global",
    label=lambda node: f"{node.params['out']}" + (f", groups {groups(node)}" if groups(node) > 1 else ""),
    splits_channels=True, flattens=True, aliases=("linear", "inner_product"),
))

register(LayerKind(
    name="flatten", doc="CxHxW -> C*H*W.", schema=Schema(),
    infer=lambda node, ins: (numel(ins[0]),),
))
