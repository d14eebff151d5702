"""A checked netdsl net -> a Caffe deploy prototxt that imports back into the same network.

What Caffe cannot say is an error at the layer's line, with the arithmetic: a convolution that
rounds up where rounding down gives another size, asymmetric padding, a grouped fc, GELU, ...
Towers become groups (local conv) or plain layers (cross); LRN and softmax inside towers, which
see one tower's channels each, become Slice -> one layer per tower -> Concat.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..diagnostics import Diagnostic
from ..errors import CaffeExportError
from ..ir import Graph, Node
from ..layers import groups
from ..layers.window import Window, counts_padding

INDENT = "  "


class _Unexpressible(Exception):
    def __init__(self, message: str, notes: list[str] = ()):
        super().__init__(message)
        self.message, self.notes = message, list(notes)


@dataclass
class Layer:
    """One Caffe layer: name, type, blobs, and its parameter messages as nested dicts."""

    name: str
    type: str
    bottoms: list[str] = field(default_factory=list)
    tops: list[str] = field(default_factory=list)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def render(self) -> str:
        lines = ["layer {", f'{INDENT}name: "{self.name}"', f'{INDENT}type: "{self.type}"']
        lines += [f'{INDENT}bottom: "{b}"' for b in self.bottoms]
        lines += [f'{INDENT}top: "{t}"' for t in self.tops]
        for key, message in self.params.items():
            lines += _message(key, message, 1)
        return "\n".join(lines + ["}"])


def _message(key: str, message: dict[str, Any], depth: int) -> list[str]:
    pad = INDENT * depth
    lines = [f"{pad}{key} {{"]
    for k, value in message.items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, dict):
                lines += _message(k, v, depth + 1)
            else:
                lines.append(f"{pad}{INDENT}{k}: {_scalar(v)}")
    return lines + [f"{pad}}}"]


class Enum(str):
    """An enum value, written bare (MAX, WITHIN_CHANNEL)."""


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


# ------------------------------------------------------------------------------------ exporter

class Exporter:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.consumers = graph.consumers()
        self.layers: list[Layer] = []
        self.top: dict[str, str] = {}  # netdsl layer -> the Caffe blob holding its output

    def run(self, on_error: Callable[[Node, _Unexpressible], None]) -> None:
        for node in self.graph:
            try:
                EXPORTERS.get(node.kind, _unsupported)(self, node)
            except _Unexpressible as err:
                on_error(node, err)
                self.top.setdefault(node.name, node.name)

    def bottom(self, node: Node) -> list[str]:
        return [self.top[i] for i in node.inputs]

    def add(self, node: Node, type_: str, params: dict[str, dict] | None = None, inplace: bool = False) -> Layer:
        bottoms = self.bottom(node)
        # Caffe's in-place style for activations and dropout when nothing else reads the input.
        if inplace and len(node.inputs) == 1 and len(self.consumers[node.inputs[0]]) == 1 \
                and self.graph.node(node.inputs[0]).kind != "input":
            top = bottoms[0]
        else:
            top = node.name
        layer = Layer(node.name, type_, bottoms, [top], params or {})
        self.layers.append(layer)
        self.top[node.name] = top
        return layer

    def per_tower(self, node: Node, type_: str, params: dict[str, dict]) -> None:
        """A channel-mixing layer inside towers: Slice, the layer once per tower, Concat."""
        count = self.graph.towers[node.towers].count
        channels = node.meta["in_shapes"][0][0]
        source = self.bottom(node)[0]
        parts = [f"{node.name}/tower{t}" for t in range(count)]
        step = channels // count
        self.layers.append(Layer(f"{node.name}/split", "Slice", [source], [f"{p}/in" for p in parts],
                                 {"slice_param": {"axis": 1, "slice_point": [step * t for t in range(1, count)]}}))
        for p in parts:
            self.layers.append(Layer(p, type_, [f"{p}/in"], [p], params))
        self.layers.append(Layer(node.name, "Concat", parts, [node.name]))
        self.top[node.name] = node.name

    def partitioned(self, node: Node) -> bool:
        return node.partitioned \
            and self.graph.towers[node.towers].count > 1


Export = Callable[[Exporter, Node], None]
EXPORTERS: dict[str, Export] = {}


def exporter(*kinds: str) -> Callable[[Export], Export]:
    def register(fn: Export) -> Export:
        for k in kinds:
            EXPORTERS[k] = fn
        return fn
    return register


# Kinds Caffe has no layer for, and why (tests/test_registry.py holds every kind to one or the other).
NO_EXPORTER = {
    "gelu": "Caffe has no GELU layer (and no erf to build one from)",
    "hardswish": "Caffe has no hard-swish layer",
    "hardsigmoid": "Caffe has no hard-sigmoid layer",
    "mish": "Caffe has no Mish layer",
    "layernorm": "Caffe has no layer norm (its MVN normalises each channel over the positions, not the "
                 "channels at each position)",
    "groupnorm": "Caffe has no group norm",
    "channel_shuffle": "BVLC Caffe has no channel shuffle (ShuffleNet's ShuffleChannel layer lives in forks)",
    "drop_path": "Caffe has no stochastic depth (it is the identity at inference: leave it out of a deploy net)",
    "upsample": "Caffe has no upsampling layer (nets use a Deconvolution with fixed bilinear weights, which "
                "differs at the borders)",
}


def _unsupported(ex: Exporter, node: Node) -> None:
    raise _Unexpressible(f"Caffe has no layer for netdsl's '{node.kind}'",
                         [NO_EXPORTER[node.kind]] if node.kind in NO_EXPORTER else [])


def _hw(values: list[int], key: str) -> dict[str, Any]:
    h, w = values
    if h == w:
        return {key: h}
    stem = key.replace("_size", "")
    return {f"{stem}_h": h, f"{stem}_w": w}


def _symmetric_pad(node: Node) -> dict[str, Any]:
    pad = node.params.get("pad", [[0, 0], [0, 0]])
    if isinstance(pad, str):  # pad=same / valid: what the checker resolved for this input size
        pad = [[w.before, w.after] for w in _windows(node)]
        if any(before != after for before, after in pad):
            _, h, w = node.meta["in_shapes"][0]
            raise _Unexpressible(
                f"Caffe pads both sides alike; pad={node.params['pad']} pads this layer's {h}x{w} input {pad} "
                "([[top, bottom], [left, right]]): TensorFlow's rule puts the odd row/column after",
                [f"{node.name}: pad=same: " + "; ".join(dict.fromkeys(win.formula() for win in _windows(node))),
                 "give symmetric padding as numbers, or an input size for which same pads evenly"])
    if any(before != after for before, after in pad):
        raise _Unexpressible(f"Caffe pads both sides alike; this layer pads {pad} ([[top, bottom], [left, right]])",
                             ["use equal padding before and after"])
    values = [pad[0][0], pad[1][0]]
    return _hw(values, "pad") if any(values) else {}


def _windows(node: Node) -> tuple[Window, Window]:
    return node.meta["windows"]


@exporter("input")
def _input(ex: Exporter, node: Node) -> None:
    shape = [1, *node.params["shape"]]
    layer = Layer(node.name, "Input", [], [node.name], {"input_param": {"shape": {"dim": shape}}})
    ex.layers.append(layer)
    ex.top[node.name] = node.name


@exporter("conv")
def _conv(ex: Exporter, node: Node) -> None:
    if _windows(node)[0].rounding == "ceil":  # (pad=same/valid round down: the checker's windows say)
        _floor_agrees(node)
    ex.add(node, "Convolution", {"convolution_param": _convolution_param(node)})


def _floor_agrees(node: Node) -> None:
    """A ceil convolution is Caffe's floor one when both roundings give the same size."""
    wins = _windows(node)
    floors = [Window(**{**w.__dict__, "rounding": "floor"}).out() for w in wins]
    bad = [(axis, w, f) for axis, w, f in zip(("height", "width"), wins, floors) if f != w.out()]
    if not bad:
        return
    axes = " and ".join(axis for axis, _, _ in bad)
    _, win, floor = bad[0]
    notes = [f"{node.name}: {w.formula()}; ceil gives {w.out()}, floor {f}" for _, w, f in bad]
    raise _Unexpressible(
        f"round=ceil cannot be expressed in Caffe, whose convolutions round down: the {axes} "
        f"{'give' if len(bad) > 1 else 'gives'} {win.out()} here and {floor} in Caffe",
        list(dict.fromkeys(notes)) + ["pad the input, or change the input size or stride, so that both "
                                      "roundings agree"])


@exporter("fc")
def _fc(ex: Exporter, node: Node) -> None:
    if groups(node) > 1:
        raise _Unexpressible("Caffe's InnerProduct has no groups (a grouped or tower-local fc)",
                             ["mark the fc `cross`, or use groups=1"])
    param: dict[str, Any] = {"num_output": node.params["out"]}
    if not node.params["bias"]:
        param["bias_term"] = False
    ex.add(node, "InnerProduct", {"inner_product_param": param})


@exporter("maxpool", "avgpool")
def _pool(ex: Exporter, node: Node) -> None:
    p = node.params
    param: dict[str, Any] = {"pool": Enum("MAX" if node.kind == "maxpool" else "AVE")}
    param.update(_hw(p["kernel"], "kernel_size"))
    param.update(_hw(p.get("stride") or p["kernel"], "stride"))  # (no stride given: none stored)
    param.update(_symmetric_pad(node))
    if node.kind == "avgpool" and not counts_padding(node) and param.get("pad", param.get("pad_h", 0)):
        raise _Unexpressible("Caffe's average pooling counts the padding in the divisor (include_pad=false "
                             "with padding cannot be expressed)"
                             + ("; pad=same averages only real positions" if p["pad"] == "same" else ""),
                             ["give include_pad=true to count the padding, as Caffe does"]
                             if p["pad"] == "same" else [])
    if _windows(node)[0].rounding == "floor":  # Caffe's pooling rounds up, with its clip
        ceil = [Window(**{**w.__dict__, "rounding": "ceil", "clip": True}).out() for w in _windows(node)]
        if ceil != [w.out() for w in _windows(node)]:
            param["round_mode"] = Enum("FLOOR")  # Caffe since 2018; older builds always round up
    ex.add(node, "Pooling", {"pooling_param": param})


@exporter("global_avgpool", "global_maxpool")
def _global_pool(ex: Exporter, node: Node) -> None:
    method = "AVE" if node.kind == "global_avgpool" else "MAX"
    ex.add(node, "Pooling", {"pooling_param": {"pool": Enum(method), "global_pooling": True}})


@exporter("adaptive_avgpool", "adaptive_maxpool")
def _adaptive_pool(ex: Exporter, node: Node) -> None:
    _, h, w = node.meta["in_shapes"][0]
    oh, ow = node.params["output"]
    if h % oh or w % ow:
        raise _Unexpressible(f"adaptive pooling from {h}x{w} to {oh}x{ow} has windows of different sizes, "
                             "which Caffe's pooling cannot express",
                             [f"{node.name}: Caffe needs the input to be a multiple of the output ({h} % {oh}, "
                              f"{w} % {ow})"])
    method = "AVE" if node.kind == "adaptive_avgpool" else "MAX"
    param = {"pool": Enum(method), **_hw([h // oh, w // ow], "kernel_size"), **_hw([h // oh, w // ow], "stride")}
    ex.add(node, "Pooling", {"pooling_param": param})


@exporter("lrn")
def _lrn(ex: Exporter, node: Node) -> None:
    p = node.params
    within = p["region"] == "within"
    alpha = p["alpha"] if p["scale"] == "mean" else p["alpha"] * (p["size"] ** 2 if within else p["size"])
    param: dict[str, Any] = {"local_size": p["size"], "alpha": alpha, "beta": p["beta"]}
    if within:
        if p["k"] != 1.0:
            raise _Unexpressible(f"Caffe's within-channel LRN always adds 1, this one adds k={p['k']:g}")
        param["norm_region"] = Enum("WITHIN_CHANNEL")
    elif p["k"] != 1.0:
        param["k"] = p["k"]
    if ex.partitioned(node):
        ex.per_tower(node, "LRN", {"lrn_param": param})
    else:
        ex.add(node, "LRN", {"lrn_param": param})


@exporter("relu")
def _relu(ex: Exporter, node: Node) -> None:
    slope = node.params["slope"]
    ex.add(node, "ReLU", {"relu_param": {"negative_slope": slope}} if slope else {}, inplace=True)


@exporter("tanh", "sigmoid")
def _activation(ex: Exporter, node: Node) -> None:
    ex.add(node, {"tanh": "TanH", "sigmoid": "Sigmoid"}[node.kind], inplace=True)


@exporter("softmax")
def _softmax(ex: Exporter, node: Node) -> None:
    if ex.partitioned(node):
        ex.per_tower(node, "Softmax", {})
    else:
        ex.add(node, "Softmax")


@exporter("dropout")
def _dropout(ex: Exporter, node: Node) -> None:
    ex.add(node, "Dropout", {"dropout_param": {"dropout_ratio": node.params["p"]}}, inplace=True)


@exporter("flatten")
def _flatten(ex: Exporter, node: Node) -> None:
    ex.add(node, "Flatten")


@exporter("batchnorm")
def _batchnorm(ex: Exporter, node: Node) -> None:
    p = node.params
    if len(node.meta["in_shapes"][0]) != 3:
        raise _Unexpressible("batch norm of a flat vector: export supports batch norm of CxHxW maps")
    param = {"eps": p["eps"], "moving_average_fraction": round(1.0 - p["momentum"], 10)}
    layer = ex.add(node, "BatchNorm", {"batch_norm_param": param})
    if p["affine"]:  # Caffe's BatchNorm has no scale and shift: a Scale layer after it adds them
        top = layer.tops[0]
        ex.layers.append(Layer(f"{node.name}/scale", "Scale", [top], [top], {"scale_param": {"bias_term": True}}))


@exporter("scale")
def _scale(ex: Exporter, node: Node) -> None:
    ex.add(node, "Scale", {"scale_param": {"bias_term": node.params["bias"]}})


@exporter("power")
def _power(ex: Exporter, node: Node) -> None:
    ex.add(node, "Power", {"power_param": dict(node.params)})


@exporter("concat")
def _concat(ex: Exporter, node: Node) -> None:
    ex.add(node, "Concat")


@exporter("add", "multiply", "maximum", "weighted_sum")
def _eltwise(ex: Exporter, node: Node) -> None:
    ins = node.meta["in_shapes"]
    if len({tuple(s) for s in ins}) > 1:
        raise _Unexpressible(f"Caffe's Eltwise needs identical shapes; this {node.kind} broadcasts "
                             + (" * " if node.kind == "multiply" else " + ").join("x".join(map(str, s)) for s in ins),
                             [f"{node.name}: " + ", ".join(f"{i}: {'x'.join(map(str, s))}"
                                                           for i, s in zip(node.inputs, ins)),
                              "Caffe has no broadcasting element-wise layer"])
    op = {"add": "SUM", "multiply": "PROD", "maximum": "MAX", "weighted_sum": "SUM"}[node.kind]
    param: dict[str, Any] = {"operation": Enum(op)}
    if node.kind == "weighted_sum":
        param["coeff"] = list(node.params["coeff"])
    ex.add(node, "Eltwise", {"eltwise_param": param})


@exporter("relu6")
def _relu6(ex: Exporter, node: Node) -> None:
    ex.add(node, "Clip", {"clip_param": {"min": 0.0, "max": 6.0}})


@exporter("silu")
def _silu(ex: Exporter, node: Node) -> None:
    ex.add(node, "Swish")  # x * sigmoid(beta * x), beta 1


@exporter("elu")
def _elu(ex: Exporter, node: Node) -> None:
    alpha = node.params["alpha"]
    ex.add(node, "ELU", {"elu_param": {"alpha": alpha}} if alpha != 1.0 else {})


@exporter("prelu")
def _prelu(ex: Exporter, node: Node) -> None:
    param: dict[str, Any] = {}
    if node.params["shared"]:
        param["channel_shared"] = True
    if node.params["init"] != 0.25:  # Caffe's default filler: constant 0.25
        param["filler"] = {"type": "constant", "value": node.params["init"]}
    ex.add(node, "PReLU", {"prelu_param": param} if param else {})


@exporter("layer_scale")
def _layer_scale(ex: Exporter, node: Node) -> None:
    ex.add(node, "Scale", {"scale_param": {"filler": {"type": "constant", "value": node.params["init"]}}})


@exporter("convtranspose")
def _convtranspose(ex: Exporter, node: Node) -> None:
    p = node.params
    if p["output_pad"] != [0, 0]:
        raise _Unexpressible(f"Caffe's Deconvolution has no output padding (output_pad={p['output_pad']})",
                             [f"{node.name}: Caffe's size is (in - 1)*stride - 2*pad + dilation*(k-1) + 1"])
    ex.add(node, "Deconvolution", {"convolution_param": _convolution_param(node)})


def _convolution_param(node: Node) -> dict[str, Any]:
    """Caffe's convolution_param, shared by Convolution and Deconvolution."""
    p = node.params
    param: dict[str, Any] = {"num_output": p["out"]}
    if not p["bias"]:
        param["bias_term"] = False
    param.update(_symmetric_pad(node))
    param.update(_hw(p["kernel"], "kernel_size"))
    if p["stride"] != [1, 1]:
        param.update(_hw(p["stride"], "stride"))
    if p["dilation"] != [1, 1]:
        if p["dilation"][0] != p["dilation"][1]:
            raise _Unexpressible("Caffe's dilation is the same for height and width")
        param["dilation"] = p["dilation"][0]
    if groups(node) > 1:
        param["group"] = groups(node)
    return param


@exporter("slice")
def _slice(ex: Exporter, node: Node) -> None:
    """Caffe's Slice cuts the whole axis: the parts before and after go to a Silence layer."""
    begin, end = node.params["begin"], node.params["end"]
    channels = node.meta["in_shapes"][0][0]
    points = [x for x in (begin, end) if 0 < x < channels]
    tops, unused = [], []
    for lo, hi in zip([0, *points], [*points, channels]):
        top = node.name if (lo, hi) == (begin, end) else f"{node.name}/unused_{lo}_{hi}"
        tops.append(top)
        if top != node.name:
            unused.append(top)
    param = {"slice_param": {"axis": 1, "slice_point": points}} if points else {}
    ex.layers.append(Layer(node.name, "Slice", ex.bottom(node), tops, param))
    if unused:
        ex.layers.append(Layer(f"{node.name}/silence", "Silence", unused, []))
    ex.top[node.name] = node.name


# ------------------------------------------------------------------------------------- API

def to_prototxt(net) -> str:
    """The deploy prototxt of a checked net; CaffeExportError lists what Caffe cannot express."""
    net.raise_for_errors()
    ex = Exporter(net.graph)
    problems: list[Diagnostic] = []

    def on_error(node: Node, err: _Unexpressible) -> None:
        problems.append(Diagnostic("error", f"{node.name}: {err.message}", node.span, node.name, err.notes,
                                   code="caffe-export"))
    ex.run(on_error)
    if problems:
        raise CaffeExportError(net.source, problems)
    title = net.graph.title or net.graph.name
    head = [f'name: "{net.graph.name}"', f"# {title}: exported by `netdsl export --format prototxt` "
            f"from {Path(net.source.name).name} (deploy net: no data, loss or accuracy layers)"]
    return "\n".join(head + [layer.render() for layer in ex.layers]) + "\n"


def export_prototxt(net, path: str | os.PathLike | None = None) -> str:
    """Write the deploy prototxt of `net` to `path` (when given) and return its text."""
    text = to_prototxt(net)
    if path is not None:
        Path(path).write_text(text)
    return text
