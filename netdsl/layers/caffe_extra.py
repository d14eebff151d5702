"""Layer kinds that Caffe nets need and the core language did not have.

slice (one output of Caffe's Slice), multiply (Eltwise PROD, and broadcasting like numpy's) and
maximum (Eltwise MAX), weighted_sum (Eltwise SUM with coefficients), scale (Caffe's Scale
on its own, a learned per-channel factor and bias) and power (Caffe's Power: (shift + scale*x)^power).
Their PyTorch builders live with the others in netdsl/lowering/builders.py.
"""
from __future__ import annotations

from ..errors import SpecError
from ..ir import Node
from .schema import BoolType, FloatListType, FloatType, IntType, Param, REQUIRED, Schema
from . import Cost, LayerKind, fmt_shape, register


def _same_shapes(node: Node, ins: list) -> tuple:
    if len({tuple(s) for s in ins}) > 1:
        raise SpecError(f"{node.kind} needs identical shapes",
                        notes=[", ".join(f"{i}: {fmt_shape(s)}" for i, s in zip(node.inputs, ins))],
                        code=node.kind)
    return tuple(ins[0])


def _slice_infer(node: Node, ins: list) -> tuple:
    channels = ins[0][0]
    begin, end = node.params["begin"], node.params["end"]
    if not 0 <= begin < end <= channels:
        raise SpecError(f"channels [{begin}, {end}) are not inside the input's {channels} channels",
                        notes=[f"{node.name}: input {fmt_shape(ins[0])}; need 0 <= begin < end <= {channels}"],
                        code="slice")
    return (end - begin, *ins[0][1:])


register(LayerKind(
    name="slice", doc="Channels begin..end-1 of its input (one output of Caffe's Slice layer).",
    schema=Schema([Param("begin", IntType(0), REQUIRED, "first channel"),
                   Param("end", IntType(1), REQUIRED, "one past the last channel")],
                  positional=("begin", "end")),
    infer=_slice_infer, label=lambda node: f"channels {node.params['begin']}:{node.params['end']}",
))


def _multiply_infer(node: Node, ins: list) -> tuple:
    from .merge import broadcast  # (imported here: merge registers its kinds after this module's)
    return broadcast(node, ins)


register(LayerKind(
    name="multiply", doc="Element-wise product (Caffe's Eltwise PROD); inputs of identical shape, or shapes "
                         "that broadcast: along each axis, the same size or 1 (squeeze-and-excitation: "
                         "16x32x32 * 16x1x1).",
    schema=Schema(), infer=_multiply_infer, arity=(2, None),
))
register(LayerKind(
    name="maximum", doc="Element-wise maximum of inputs of identical shape (Caffe's Eltwise MAX).",
    schema=Schema(), infer=_same_shapes, arity=(2, None),
))


def _weighted_infer(node: Node, ins: list) -> tuple:
    coeff = node.params["coeff"]
    if len(coeff) != len(ins):
        raise SpecError(f"{len(coeff)} coefficients for {len(ins)} inputs",
                        notes=[f"{node.name}: give one coefficient per input"], code="weighted_sum")
    return _same_shapes(node, ins)


register(LayerKind(
    name="weighted_sum", doc="sum of coeff[i] * input i, inputs of identical shape (Caffe's Eltwise SUM with coeff).",
    schema=Schema([Param("coeff", FloatListType(), REQUIRED, "one factor per input")], positional=("coeff",)),
    infer=_weighted_infer, label=lambda node: "coeff " + ", ".join(f"{c:g}" for c in node.params["coeff"]), arity=(2, None),
))


def _scale_cost(node: Node, ins: list, out: tuple) -> Cost:
    c = ins[0][0]
    return Cost(c * (2 if node.params["bias"] else 1), 0)


register(LayerKind(
    name="scale", doc="A learned factor per channel, and a learned bias with bias=true (Caffe's Scale).",
    schema=Schema([Param("bias", BoolType(), False, "add a learned bias per channel")]),
    infer=lambda node, ins: tuple(ins[0]), cost=_scale_cost,
    label=lambda node: "with bias" if node.params["bias"] else "",
))

register(LayerKind(
    name="power", doc="(shift + scale * x) ** power, element-wise (Caffe's Power).",
    schema=Schema([Param("power", FloatType(), 1.0), Param("scale", FloatType(), 1.0),
                   Param("shift", FloatType(), 0.0)], positional=("power",)),
    infer=lambda node, ins: tuple(ins[0]),
    label=lambda node: "({:g} + {:g}x)^{:g}".format(node.params["shift"], node.params["scale"],
                                                    node.params["power"]),
))
