"""Element-wise layers: activations, softmax, dropout and stochastic depth. They keep the shape."""
from __future__ import annotations

from ..errors import SpecError
from .schema import BoolType, ChoiceType, FloatType, Param, REQUIRED, Schema
from . import Cost, LayerKind, register


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

# ---------------------------------------------------------------- modern convnets (torchvision)

_simple("relu6", "min(max(0, x), 6) (MobileNetV2).")
_simple("hardswish", "x * relu6(x + 3) / 6 (MobileNetV3).")
_simple("hardsigmoid", "relu6(x + 3) / 6 (MobileNetV3's squeeze-and-excitation gate).")
register(LayerKind(
    name="silu", doc="x * sigmoid(x), also called swish (EfficientNet).", schema=Schema([]), infer=_same,
    aliases=("swish",),
))
_simple("mish", "x * tanh(softplus(x)).")
_simple("elu", "x for x > 0, alpha * (exp(x) - 1) otherwise.",
        [Param("alpha", FloatType(), 1.0, "the value approached for very negative x is -alpha")],
        label=lambda n: f"alpha {n.params['alpha']:g}" if n.params["alpha"] != 1.0 else "")


def _prelu_cost(node, ins, out):
    return Cost(1 if node.params["shared"] else ins[0][0], 0)


def _prelu_label(node):
    text = "one slope" if node.params["shared"] else "a slope per channel"
    return text + (f", init {node.params['init']:g}" if node.params["init"] != 0.25 else "")


register(LayerKind(
    name="prelu",
    doc="A leaky ReLU whose negative slope is learned: one per channel (Caffe's default), or one for "
        "all channels with shared=true (PyTorch's nn.PReLU() default).",
    schema=Schema([
        Param("shared", BoolType(), False, "one slope for every channel (Caffe's channel_shared)"),
        Param("init", FloatType(), 0.25, "the slopes' initial value (Caffe and PyTorch: 0.25)"),
    ]),
    infer=_same, cost=_prelu_cost, label=_prelu_label,
))


def _drop_path_infer(node, ins):
    if node.partitioned:
        raise SpecError("drop_path inside towers is not supported: on N devices each tower would drop "
                        "different samples", notes=["put it outside the towers block"], code="towers")
    return tuple(ins[0])


register(LayerKind(
    name="drop_path",
    doc="Stochastic depth (torchvision's StochasticDepth, mode row): while training, each sample's "
        "input is zeroed with probability p and the others are scaled by 1 / (1 - p); the identity "
        "in evaluation. Put it on a residual branch, before the add.",
    schema=Schema([Param("p", FloatType(minimum=0.0, maximum=1.0), REQUIRED, "probability of dropping a sample")],
                  positional=("p",)),
    infer=_drop_path_infer, label=lambda n: f"p={n.params['p']:g}",
))
