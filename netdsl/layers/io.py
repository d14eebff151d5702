"""The net's input: a typed tensor declaration (`input data: 3x224x224`)."""
from __future__ import annotations

from .schema import IntType, Param, REQUIRED, Schema
from . import LayerKind, fmt_shape, register


def _infer(node, ins):
    return tuple(node.params["shape"])


register(LayerKind(
    name="input",
    doc="The network's input, one image (or vector) per batch element.",
    schema=Schema([Param("shape", IntType(), REQUIRED, "CxHxW or N")]),
    infer=_infer,
    label=lambda node: fmt_shape(node.params["shape"]),
    arity=(0, 0),
))
