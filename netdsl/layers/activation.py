"""Element-wise layers: activations, softmax and dropout. They keep the shape."""
from __future__ import annotations

from .schema import ChoiceType, FloatType, Param, Schema
from . import LayerKind, register


def _same(node, ins):
    return tuple(ins[0])


def _simple(name: str, doc: str, params: list[Param] | None = None, positional=(), label=lambda n: "",
            mixes_channels: bool = False) -> None:
    register(LayerKind(
        name=name, doc=doc, schema=Schema(params or [], positional), infer=_same, label=label,
        mixes_channels=mixes_channels,
    ))


_simple("relu", "max(0, x); with `slope`, a leaky ReLU.",
        [Param("slope", FloatType(), 0.0, "negative slope (leaky ReLU)")],
        label=lambda n: f"slope {n.params['slope']:g}" if n.params["slope"] else "")
_simple("tanh", "Hyperbolic tangent.")
_simple("sigmoid", "Logistic sigmoid.")
_simple("gelu", "Gaussian error linear unit.",
        [Param("approximate", ChoiceType(("none", "tanh")), "none")])
_simple("softmax", "Softmax over channels (the class axis).", mixes_channels=True)
_simple("dropout", "Zeroes each activation with probability p while training.",
        [Param("p", FloatType(minimum=0.0, maximum=1.0), 0.5)], positional=("p",),
        label=lambda n: f"p={n.params['p']:g}")
